"""Tunnel records and their user and group indexes in Redis.

A record (hash ``tb:{app}:t:{tunnel}``) says which pod and which connection hold a tunnel,
with what the presence API returns; sorted sets index it by user, by group and by app (the
``max_tunnels`` quota counts the app's), and a set per pod lists what to clean up if that
pod dies. The Lua scripts (``scripts.py``) change a
record and its indexes in one step. Every call here may raise ``RedisError``; callers
route it through ``RedisHealth``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tunnel_broker.backend.base import Page, TunnelRecord
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.scripts import (
    ATTACH,
    DETACH,
    MEMBERSHIP,
    PARK,
    PRUNE_INDEX,
    SETTLE,
)
from tunnel_broker.errors import TooManyTunnels, TunnelQuotaExceeded
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.usage.periods import hour_name


def texts(values: Any) -> list[str]:
    """Members as ``str``: the clients decode responses, redis-py's types don't know."""
    return [str(v) for v in values]


def mapping(values: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(values).items()}


def _record(tunnel_id: str, raw: dict[str, str]) -> TunnelRecord:
    return TunnelRecord(
        tunnel_id,
        raw["user"],
        json.loads(raw.get("identity") or "{}"),
        json.loads(raw.get("meta") or "{}"),
        tuple(sorted(json.loads(raw.get("groups") or "[]"))),
        float(raw.get("connected_at") or 0),
        raw["node"],
        raw.get("state", "open"),
    )


@dataclass(frozen=True, slots=True)
class Written:
    """What a record held before this pod wrote it."""

    previous_node: str
    previous_conn: str
    groups: list[str]  # the tunnel's groups, old and new
    owed: list[str]  # pods that may hold undelivered events of the tunnel
    life: str  # the connection that began the tunnel's lifecycle (``scripts.ATTACH``)
    sent: int = 0  # reliable protocol: pushes numbered so far (``resumes.py``)
    accepted: int = 0  # and the last client message accepted
    sequences: str = ""  # and their name (``ResumeState.sequences``)


@dataclass(frozen=True, slots=True)
class Removed:
    """What a removal found."""

    removed: bool  # the record was the connection's, and is gone
    holder: str  # the pod holding the tunnel now, or ""
    life: str = ""  # the life of the holder's record


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a tunnel, as its record says."""

    node: str
    conn: str
    user_id: str
    identity: dict[str, Any]
    meta: dict[str, Any]
    resume_window: float = 0.0  # a reliable tunnel's: it waits that long for a resume


PRUNE_SECONDS = 60.0


class TunnelRegistry:
    def __init__(
        self,
        client: aioredis.Redis,
        node_id: str,
        clock: Callable[[], float] = time.time,
        usage_retention_seconds: int = 35 * 86400,
    ) -> None:
        self.redis = client
        self.node_id = node_id
        # The hour whose usage bucket a change's peak goes in, and how long buckets last.
        self.clock = clock
        self.usage_retention_seconds = usage_retention_seconds
        self._attach = client.register_script(ATTACH)
        self._park = client.register_script(PARK)
        self._detach = client.register_script(DETACH)
        self._membership = client.register_script(MEMBERSHIP)
        self._settle = client.register_script(SETTLE)
        self._prune_index = client.register_script(PRUNE_INDEX)
        self._pruned: dict[str, float] = {}  # app -> when its index was last pruned

    async def write(
        self, tunnel: Tunnel, conn: str, limit: int = 0, here: bool = True, app_limit: int = 0
    ) -> Written:
        """Record ``tunnel`` as held by this pod's connection ``conn``. A new tunnel
        that would exceed the user's ``limit`` raises ``TooManyTunnels``, the app's
        ``app_limit`` ``TunnelQuotaExceeded`` (0: no check). ``here``: the tunnel has
        another socket open on this pod (or this is it), which ``conn`` continues."""
        app_id = tunnel.app.id
        # Listed before recorded (two calls: the list is the pod's, in another slot): a
        # pod dying between them leaves a listing its reaper skips (no record names the
        # pod), never a record no reaper would find.
        listing = keys.node_tunnels(self.node_id)
        member = keys.member(app_id, tunnel.tunnel_id)
        await self.redis.sadd(listing, member)
        result = await self._write(tunnel, conn, limit, here, app_limit)
        if result[0] == "!app" and await self._prune(app_id):
            result = await self._write(tunnel, conn, limit, here, app_limit)
        if result[0] in ("!", "!app"):
            await self.redis.srem(listing, member)  # refused: a new tunnel, listed by us
            if result[0] == "!":
                raise TooManyTunnels(tunnel.user_id)
            raise TunnelQuotaExceeded(f"app {app_id} has its {app_limit} tunnels open")
        old_node, old_conn, merged, owed, life, sent, accepted, sequences = result
        return Written(
            str(old_node),
            str(old_conn),
            list(json.loads(merged)),
            texts(json.loads(owed)),
            str(life),
            int(sent),
            int(accepted),
            str(sequences),
        )

    async def _write(
        self, tunnel: Tunnel, conn: str, limit: int, here: bool, app_limit: int
    ) -> list[Any]:
        app_id = tunnel.app.id
        result: list[Any] = await self._attach(
            keys=[
                keys.tunnel(app_id, tunnel.tunnel_id),
                keys.user_index(app_id, tunnel.user_id),
                keys.owed(app_id, tunnel.tunnel_id),
                keys.resume_state(app_id, tunnel.tunnel_id),
                keys.resume_buffer(app_id, tunnel.tunnel_id),
                keys.app_index(app_id),
                keys.usage(app_id, hour_name(self.clock())),
            ],
            args=[
                self.node_id,
                conn,
                tunnel.user_id,
                json.dumps(tunnel.identity),
                json.dumps(tunnel.meta),
                json.dumps(sorted(tunnel.groups)),
                str(tunnel.connected_at),
                tunnel.tunnel_id,
                keys.group_prefix(app_id),
                limit,
                "1" if here else "0",
                "1" if tunnel.reliable is not None else "0",
                "1" if tunnel.resume_after is not None else "0",
                tunnel.app.limits.resume_buffer_messages,
                tunnel.app.limits.resume_window_seconds,
                app_limit,
                self.usage_retention_seconds,
            ],
        )
        return result

    async def _prune(self, app_id: str) -> bool:
        """Drop entries of the app's index that name no record; whether there were any.
        Scripts keep the two together, but pods of a release without the index (during
        a rolling upgrade) remove records without their entries: at the quota, such an
        entry would hold a place for good. Looked for at most once a minute per app."""
        now = time.monotonic()
        if now - self._pruned.get(app_id, -PRUNE_SECONDS) < PRUNE_SECONDS:
            return False
        self._pruned[app_id] = now
        index = keys.app_index(app_id)
        ids = texts(await self.redis.zrange(index, 0, -1))
        pruned = 0
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            records = [keys.tunnel(app_id, tunnel_id) for tunnel_id in batch]
            pruned += int(await self._prune_index(keys=[index, *records], args=batch))
        return pruned > 0

    async def mark_resumable(self, app_id: str, tunnel_id: str, conn: str) -> None:
        """Presence shows the tunnel waiting for a resume, if ``conn`` still holds it."""
        await self._park(keys=[keys.tunnel(app_id, tunnel_id)], args=[conn])

    async def remove(
        self,
        app_id: str,
        tunnel_id: str,
        user_id: str,
        conn: str,
        owes: str = "",
        settled: str = "",
    ) -> Removed:
        """Remove a tunnel's record and index entries if connection ``conn`` still owns it;
        put pod ``owes`` on the tunnel's owed set and take pod ``settled`` off it."""
        removed, holder, life = await self._detach(
            keys=[
                keys.tunnel(app_id, tunnel_id),
                keys.user_index(app_id, user_id),
                keys.owed(app_id, tunnel_id),
                keys.resume_state(app_id, tunnel_id),
                keys.resume_buffer(app_id, tunnel_id),
                keys.app_index(app_id),
                keys.usage(app_id, hour_name(self.clock())),
            ],
            args=[
                conn,
                tunnel_id,
                keys.group_prefix(app_id),
                owes,
                settled,
                self.usage_retention_seconds,
            ],
        )
        return Removed(bool(removed), str(holder), str(life))

    async def owed(self, tunnels: list[tuple[str, str]]) -> list[list[str]]:
        """The owed set of each ``(app_id, tunnel_id)``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for app_id, tunnel_id in tunnels:
            pipe.smembers(keys.owed(app_id, tunnel_id))
        return [texts(members) for members in await pipe.execute()]

    async def settle(self, app_id: str, tunnel_id: str, nodes: list[str]) -> tuple[str, list[str]]:
        """Take ``nodes`` off the tunnel's owed set; ``(holding pod or "", pods left)``."""
        holder, owed = await self._settle(
            keys=[keys.tunnel(app_id, tunnel_id), keys.owed(app_id, tunnel_id)], args=nodes
        )
        return str(holder), texts(json.loads(owed))

    async def unlist(self, node_id: str, app_id: str, tunnel_id: str) -> None:
        """Drop a tunnel from a pod's clean-up list."""
        await self.redis.srem(keys.node_tunnels(node_id), keys.member(app_id, tunnel_id))

    async def listed(self, node_id: str) -> list[tuple[str, str]]:
        """``(app_id, tunnel_id)`` of every tunnel on a pod's clean-up list."""
        members = texts(await self.redis.smembers(keys.node_tunnels(node_id)))
        return [keys.split_member(m) for m in members]

    async def reconcile(self, open_here: list[tuple[Tunnel, str]]) -> None:
        """After an outage: drop the records of tunnels this pod no longer holds, and
        rewrite those of ``open_here`` (tunnels with their connection ids) that are not
        closing: a Redis restart may have lost them."""
        here = {(t.app.id, t.tunnel_id) for t, _ in open_here}
        for app_id, tunnel_id in await self.listed(self.node_id):
            if (app_id, tunnel_id) in here:
                continue
            holder = await self.holder(app_id, tunnel_id)
            if holder is not None and holder.node == self.node_id:
                await self.remove(app_id, tunnel_id, holder.user_id, holder.conn)
            await self.unlist(self.node_id, app_id, tunnel_id)
        for tunnel, conn in open_here:
            if not tunnel.closing:
                await self.write(tunnel, conn)

    async def holder(self, app_id: str, tunnel_id: str) -> Holder | None:
        raw = mapping(await self.redis.hgetall(keys.tunnel(app_id, tunnel_id)))
        if not raw.get("node"):
            return None
        return Holder(
            raw["node"],
            raw.get("conn", ""),
            raw.get("user", ""),
            json.loads(raw.get("identity") or "{}"),
            json.loads(raw.get("meta") or "{}"),
            float(raw.get("rwin") or 0) if raw.get("rel") == "1" else 0.0,
        )

    async def owners(self, app_id: str, tunnel_ids: tuple[str, ...]) -> dict[str, str]:
        """The pod holding each of ``tunnel_ids`` that is open."""
        return {t: node for t, (node, _) in (await self.holders(app_id, tunnel_ids)).items()}

    async def holders(
        self, app_id: str, tunnel_ids: tuple[str, ...]
    ) -> dict[str, tuple[str, bool]]:
        """The pod holding each of ``tunnel_ids`` that is open, and whether the tunnel
        speaks the reliable protocol."""
        pipe = self.redis.pipeline(transaction=False)
        unique = list(dict.fromkeys(tunnel_ids))
        for tunnel_id in unique:
            pipe.hmget(keys.tunnel(app_id, tunnel_id), ["node", "rel"])
        found = await pipe.execute()
        return {t: (str(n), r == "1") for t, (n, r) in zip(unique, found, strict=True) if n}

    async def count(self, app_id: str, kind: str, names: tuple[str, ...]) -> int:
        """Open tunnels of some users or groups (a tunnel in two named groups counts twice)."""
        index = keys.user_index if kind == "users" else keys.group_index
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(index(app_id, name))
        return int(sum(await pipe.execute()))

    async def change_membership(
        self, app_id: str, tunnel_id: str, group: str, join: bool, max_groups: int = 0
    ) -> str:
        """Join or leave a group in the record and the group index; the holding pod, ""
        when the tunnel is not open, or "!" when a join would exceed ``max_groups``."""
        node = await self._membership(
            keys=[keys.tunnel(app_id, tunnel_id)],
            args=[
                group,
                tunnel_id,
                keys.group_prefix(app_id),
                "join" if join else "leave",
                max_groups,
            ],
        )
        return str(node or "")

    async def count_app(self, app_id: str) -> int:
        """The app's tunnels with a record (open, or waiting for a resume), all pods."""
        return int(await self.redis.zcard(keys.app_index(app_id)))

    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None:
        raw = mapping(await self.redis.hgetall(keys.tunnel(app_id, tunnel_id)))
        return _record(tunnel_id, raw) if raw else None

    async def page(self, app_id: str, index: str, cursor: str | None, limit: int) -> Page:
        start = f"({cursor}" if cursor else "-"
        ids = texts(await self.redis.zrangebylex(index, start, "+", start=0, num=limit + 1))
        chunk = ids[:limit]
        raws: list[Any] = []
        if chunk:
            pipe = self.redis.pipeline(transaction=False)
            for tunnel_id in chunk:
                pipe.hgetall(keys.tunnel(app_id, tunnel_id))
            raws = await pipe.execute()
        records = [_record(t, mapping(r)) for t, r in zip(chunk, raws, strict=True) if r]
        return Page(records, chunk[-1] if len(ids) > limit else None)

"""The Redis backend: many broker pods behave as one.

Shared state (tunnel records; user and group indexes; node leases; apps) lives in Redis.
Routing uses pub/sub: a push to named tunnels is published to the channel of each pod
holding one, a push to users, groups or everyone is published once on the broadcast
channel and every pod delivers it to its own tunnels from its local hub. So fan-out costs
one publish per push, not one per tunnel.

Failure handling, in short (docs/operations.md has the long form):
- every pod renews a lease; a pod whose lease expired is *reaped* by a surviving pod
  (under a lock), which reports ``tunnel.closed`` with reason ``node_lost`` for each of its
  tunnels, exactly once, and removes them from the indexes;
- while Redis is unreachable the pod is unready, refuses new connects (1013) and API calls
  (503) but keeps relaying its open tunnels; when Redis returns it rewrites its own
  tunnels into the indexes (a Redis restart may have lost them) and drops stale entries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tunnel_broker.apps import App
from tunnel_broker.appstore import load_apps, upsert_apps
from tunnel_broker.backend import keys
from tunnel_broker.backend.base import (
    Backend,
    BackendUnavailable,
    Page,
    TooManyTunnels,
    TunnelRecord,
)
from tunnel_broker.backend.memory import take_over
from tunnel_broker.backend.redis_sessions import RedisSessionStore
from tunnel_broker.backend.scripts import ATTACH, DETACH, MEMBERSHIP
from tunnel_broker.closecodes import CloseCode
from tunnel_broker.hub import Hub
from tunnel_broker.sessions import SessionStore
from tunnel_broker.targets import Target
from tunnel_broker.tunnel import Tunnel

logger = logging.getLogger("tunnel_broker.backend.redis")

T = TypeVar("T")
# Reports a lost tunnel: (app_id, tunnel_id, user_id, identity, meta)
LostTunnelReporter = Callable[[str, str, str, dict[str, Any], dict[str, Any]], None]


def _encode_payload(payload: str | bytes) -> dict[str, str]:
    if isinstance(payload, str):
        return {"text": payload}
    return {"b64": base64.b64encode(payload).decode()}


def _decode_payload(raw: dict[str, str]) -> str | bytes:
    return raw["text"] if "text" in raw else base64.b64decode(raw["b64"])


def _texts(values: Any) -> list[str]:
    """Members as ``str``: the clients decode responses, redis-py's types don't know."""
    return [str(v) for v in values]


def _mapping(values: Any) -> dict[str, str]:
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
    )


class RedisBackend(Backend):
    name = "redis"

    def __init__(
        self,
        url: str,
        hub: Hub,
        node_id: str,
        report_lost: LostTunnelReporter,
        lease_seconds: float = 15.0,
    ) -> None:
        self.hub = hub
        self.node_id = node_id
        self.report_lost = report_lost
        self.lease_seconds = lease_seconds
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=max(1.0, lease_seconds / 3),
            socket_connect_timeout=max(1.0, lease_seconds / 3),
            retry_on_timeout=False,
        )
        # Pub/sub blocks on reads indefinitely, so it gets a client without read timeouts.
        self.subscriber: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=max(1.0, lease_seconds / 3),
            socket_keepalive=True,
        )
        self._attach = self.redis.register_script(ATTACH)
        self._detach = self.redis.register_script(DETACH)
        self._membership = self.redis.register_script(MEMBERSHIP)
        self._conns: dict[Tunnel, str] = {}
        self._healthy = False
        self._healthy_since = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.on_apps_changed: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.on_repaired: Callable[[], Coroutine[Any, Any, None]] | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.redis.ping()
            await self._renew_lease()
            # A previous process with our node id died without a goodbye: its tunnels
            # are gone, report them now rather than leaving them in the indexes forever.
            stale = await self._reap(self.node_id, announce=False)
            if stale:
                logger.warning("reported %d tunnels of a previous run of this node closed", stale)
        except RedisError as exc:
            # Start anyway: the pod is unready until Redis answers, then catches up.
            logger.error("redis unreachable at start (%s); retrying", type(exc).__name__)
        else:
            self._mark_healthy()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._lease_loop(), name="redis-lease"),
            loop.create_task(self._subscriber_loop(), name="redis-subscriber"),
        ]

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError):
            # A goodbye: drop the lease so nobody reaps tunnels we already closed.
            await self.redis.zrem(keys.NODES, self.node_id)
            await self.redis.delete(keys.node_tunnels(self.node_id))
        await self.redis.aclose()
        await self.subscriber.aclose()

    def ready(self) -> bool:
        return self._healthy

    def session_store(self) -> SessionStore:
        return RedisSessionStore(self.redis)

    async def shared_apps(self, publish: list[App]) -> list[App] | None:
        try:
            if publish:
                await upsert_apps(self.redis, publish)
            return await load_apps(self.redis)
        except RedisError as exc:
            raise BackendUnavailable(f"apps not readable from redis: {exc}") from exc

    def _mark_healthy(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._healthy_since = time.monotonic()

    def _mark_unhealthy(self, exc: BaseException) -> None:
        if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
            # Redis answered, with an error: a bug of ours, not an outage.
            logger.error("redis command failed: %s", exc)
            return
        if self._healthy:
            logger.error("redis unreachable (%s): unready until it returns", type(exc).__name__)
        self._healthy = False

    async def _call(self, operation: Awaitable[T]) -> T:
        """Run a Redis operation; map failures to ``BackendUnavailable``."""
        if not self._healthy:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise BackendUnavailable("redis is unreachable")
        try:
            return await operation
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._mark_unhealthy(exc)
            raise BackendUnavailable("redis is unreachable") from exc

    # ---- leases, reaping and repair ---------------------------------------------------

    async def _renew_lease(self) -> None:
        # Expiry at three quarters of the lease, checked every eighth: a dead pod's tunnels
        # are reported within the lease, and a live pod may miss five renewals in a row
        # (a slow Redis, a long pause) before anyone thinks it dead.
        expiry = time.time() + self.lease_seconds * 0.75
        await self.redis.zadd(keys.NODES, {self.node_id: expiry})

    async def _lease_loop(self) -> None:
        interval = self.lease_seconds / 8
        while True:
            await asyncio.sleep(interval)
            try:
                recovering = not self._healthy
                await self._renew_lease()
                if recovering:
                    await self._repair()
                    self._mark_healthy()
                    if self.on_repaired is not None:
                        await self.on_repaired()
                    logger.info("redis reachable again; indexes repaired")
                await self._reap_expired()
            except RedisError as exc:
                self._mark_unhealthy(exc)
            except Exception:
                logger.exception("lease loop failed; retrying")

    async def _remove(self, app_id: str, tunnel_id: str, user_id: str, conn: str) -> bool:
        """Remove a tunnel's record and index entries if connection ``conn`` still owns it."""
        removed = await self._detach(
            keys=[keys.tunnel(app_id, tunnel_id), keys.user_index(app_id, user_id)],
            args=[conn, tunnel_id, keys.group_prefix(app_id)],
        )
        return bool(removed)

    async def _repair(self) -> None:
        """After an outage: forget what we no longer hold, rewrite what we hold."""
        if await self.redis.exists(keys.node_reaped(self.node_id)):
            # Others reported our tunnels closed while we were cut off; the clients must
            # reconnect (to any pod) so that the business server hears of them again.
            await self.redis.delete(keys.node_reaped(self.node_id))
            for tunnel in self.hub:
                tunnel.replaced = True  # its tunnel.closed was already sent
                tunnel.close(CloseCode.SERVICE_RESTART, "node_lost")
            return
        held = {keys.member(t.app.id, t.tunnel_id): t for t in self.hub}
        listed = _texts(await self.redis.smembers(keys.node_tunnels(self.node_id)))
        for stale in set(listed) - set(held):
            app_id, tunnel_id = keys.split_member(stale)
            raw = _mapping(await self.redis.hgetall(keys.tunnel(app_id, tunnel_id)))
            if raw.get("node") == self.node_id:
                await self._remove(app_id, tunnel_id, raw["user"], raw["conn"])
            await self.redis.srem(keys.node_tunnels(self.node_id), stale)
        for tunnel in held.values():
            if not tunnel.closing:
                await self._write(tunnel)

    async def _reap_expired(self) -> None:
        # Right after an outage every lease looks expired; give pods one lease to renew.
        if time.monotonic() - self._healthy_since < self.lease_seconds:
            return
        dead = _texts(await self.redis.zrangebyscore(keys.NODES, "-inf", time.time()))
        for node_id in dead:
            if node_id == self.node_id:
                continue
            lock = keys.REAP_LOCK + node_id
            if not await self.redis.set(
                lock, self.node_id, nx=True, ex=int(self.lease_seconds * 4)
            ):
                continue
            try:
                lost = await self._reap(node_id)
            finally:
                await self.redis.delete(lock)
            logger.warning("node %s lost its lease; reported %d tunnels closed", node_id, lost)

    async def _reap(self, node_id: str, announce: bool = True) -> int:
        members = _texts(await self.redis.smembers(keys.node_tunnels(node_id)))
        if announce:
            await self.redis.set(keys.node_reaped(node_id), "1", ex=86400)
        lost = 0
        for value in members:
            app_id, tunnel_id = keys.split_member(value)
            raw = _mapping(await self.redis.hgetall(keys.tunnel(app_id, tunnel_id)))
            if raw.get("node") != node_id:
                continue  # taken over by a live pod meanwhile
            if await self._remove(app_id, tunnel_id, raw["user"], raw["conn"]):
                lost += 1
                self.report_lost(
                    app_id,
                    tunnel_id,
                    raw["user"],
                    json.loads(raw.get("identity") or "{}"),
                    json.loads(raw.get("meta") or "{}"),
                )
        await self.redis.delete(keys.node_tunnels(node_id))
        if announce:
            await self.redis.zrem(keys.NODES, node_id)
        return lost

    # ---- pub/sub ------------------------------------------------------------------------

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        message["from"] = self.node_id
        await self._call(self.redis.publish(channel, json.dumps(message, separators=(",", ":"))))

    async def _subscriber_loop(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(
                    keys.node_channel(self.node_id), keys.BROADCAST, keys.APPS_CHANGED
                )
                delay = 0.1
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        # Awaited in turn: messages are applied in the order published.
                        await self._on_message(message["channel"], message["data"])
            except RedisError as exc:
                self._mark_unhealthy(exc)
            except Exception:
                logger.exception("pub/sub reader failed; reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _on_message(self, channel: str, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.error("malformed pub/sub message on %s ignored", channel)
            return
        if channel == keys.APPS_CHANGED:
            if self.on_apps_changed is not None:
                await self.on_apps_changed()
            return
        if channel == keys.BROADCAST and message.get("from") == self.node_id:
            return  # we delivered locally before publishing
        op = message.get("op")
        app_id = message.get("app", "")
        target = Target(message["kind"], tuple(message.get("ids", ())))
        if op == "deliver":
            await self.hub.deliver_sliced(app_id, target, _decode_payload(message["payload"]))
        elif op == "close":
            for tunnel in self.hub.resolve(app_id, target):
                tunnel.close(message["code"], message["reason"])
        elif op == "replace":
            old = self.hub.get(app_id, target.ids[0])
            if old is not None and self._conns.get(old) == message["conn"]:
                old.replaced = True
                old.close(CloseCode.REPLACED, "replaced")
        elif op in ("join", "leave"):
            member = self.hub.get(app_id, target.ids[0])
            if member is not None:
                if op == "join":
                    self.hub.join(member, message["group"])
                else:
                    self.hub.leave(member, message["group"])

    # ---- the Backend interface ------------------------------------------------------

    async def _write(self, tunnel: Tunnel, limit: int = 0) -> list[Any]:
        app_id = tunnel.app.id
        conn = self._conns.setdefault(tunnel, os.urandom(8).hex())
        result: list[Any] = await self._attach(
            keys=[keys.tunnel(app_id, tunnel.tunnel_id), keys.user_index(app_id, tunnel.user_id)],
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
            ],
        )
        if result[0] == "!":
            return result
        await self.redis.sadd(
            keys.node_tunnels(self.node_id), keys.member(app_id, tunnel.tunnel_id)
        )
        return result

    async def attach(self, tunnel: Tunnel) -> bool:
        local_previous = self.hub.add(tunnel)
        limit = 0 if local_previous is not None else tunnel.app.limits.max_tunnels_per_user
        try:
            written = await self._call(self._write(tunnel, limit))
        except BackendUnavailable:
            self.hub.remove(tunnel)
            raise
        if written[0] == "!":
            self.hub.remove(tunnel)
            self._conns.pop(tunnel, None)
            raise TooManyTunnels(tunnel.user_id)
        old_node, old_conn, merged = written
        if local_previous is not None:
            take_over(local_previous, tunnel)
        # Groups the tunnel had before (joined on an older socket, here or elsewhere).
        for group in set(json.loads(merged)) | tunnel.groups:
            self.hub.join(tunnel, group)
        if old_node and old_node != self.node_id:
            # Taken over from another pod: that pod closes its socket with 4409.
            tunnel.approve()
            await self._publish(
                keys.node_channel(old_node),
                {
                    "op": "replace",
                    "app": tunnel.app.id,
                    "kind": "tunnels",
                    "ids": [tunnel.tunnel_id],
                    "conn": old_conn,
                },
            )
            return True
        return local_previous is not None

    async def detach(self, tunnel: Tunnel) -> None:
        self.hub.remove(tunnel)
        conn = self._conns.pop(tunnel, None)
        if conn is None or not self._healthy:
            return  # repaired when Redis returns
        app_id = tunnel.app.id
        try:
            await self._remove(app_id, tunnel.tunnel_id, tunnel.user_id, conn)
            if self.hub.get(app_id, tunnel.tunnel_id) is None:
                await self.redis.srem(
                    keys.node_tunnels(self.node_id), keys.member(app_id, tunnel.tunnel_id)
                )
        except RedisError as exc:
            self._mark_unhealthy(exc)

    async def _owners(self, app_id: str, tunnel_ids: tuple[str, ...]) -> dict[str, str]:
        pipe = self.redis.pipeline(transaction=False)
        unique = list(dict.fromkeys(tunnel_ids))
        for tunnel_id in unique:
            pipe.hget(keys.tunnel(app_id, tunnel_id), "node")
        nodes = await self._call(pipe.execute())
        return {t: n for t, n in zip(unique, nodes, strict=True) if n}

    async def deliver(self, app_id: str, target: Target, payload: str | bytes) -> list[str]:
        encoded = _encode_payload(payload)

        def message(kind: str, ids: list[str]) -> dict[str, Any]:
            return {"op": "deliver", "app": app_id, "kind": kind, "ids": ids, "payload": encoded}

        if target.kind != "tunnels":
            await self._publish(keys.BROADCAST, message(target.kind, list(target.ids)))
            # Published first, so the other pods work while this one delivers its share.
            await self.hub.deliver_sliced(app_id, target, payload)
            return []
        if all(self.hub.get(app_id, t) is not None for t in target.ids):
            # All here (a reply to a client of this pod, say): no lookup needed.
            here = await self.hub.deliver_sliced(app_id, target, payload)
            return [t for t in dict.fromkeys(target.ids) if t not in here]
        owners = await self._owners(app_id, target.ids)
        by_node: dict[str, list[str]] = {}
        for tunnel_id, node in owners.items():
            by_node.setdefault(node, []).append(tunnel_id)
        delivered: set[str] = set()
        for node, tunnel_ids in by_node.items():
            if node == self.node_id:
                delivered |= await self.hub.deliver_sliced(
                    app_id, Target("tunnels", tuple(tunnel_ids)), payload
                )
            else:
                await self._publish(keys.node_channel(node), message("tunnels", tunnel_ids))
                delivered.update(tunnel_ids)
        return [t for t in dict.fromkeys(target.ids) if t not in delivered]

    async def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        message = {
            "op": "close",
            "app": app_id,
            "kind": target.kind,
            "ids": list(target.ids),
            "code": code,
            "reason": reason,
        }
        if target.kind == "tunnels":
            owners = await self._owners(app_id, target.ids)
            for node in set(owners.values()):
                if node == self.node_id:
                    for tunnel in self.hub.resolve(app_id, target):
                        tunnel.close(code, reason)
                else:
                    await self._publish(keys.node_channel(node), dict(message))
            return len(owners)
        count = 0
        if target.kind in ("users", "groups"):
            index = keys.user_index if target.kind == "users" else keys.group_index
            pipe = self.redis.pipeline(transaction=False)
            for name in target.ids:
                pipe.zcard(index(app_id, name))
            count = sum(await self._call(pipe.execute()))
        for tunnel in self.hub.resolve(app_id, target):
            tunnel.close(code, reason)
        await self._publish(keys.BROADCAST, message)
        return int(count)

    async def _change_membership(self, op: str, app_id: str, tunnel_id: str, group: str) -> bool:
        node = await self._call(
            self._membership(
                keys=[keys.tunnel(app_id, tunnel_id)],
                args=[group, tunnel_id, keys.group_prefix(app_id), op],
            )
        )
        if not node:
            return False
        if node == self.node_id:
            tunnel = self.hub.get(app_id, tunnel_id)
            if tunnel is not None:
                (self.hub.join if op == "join" else self.hub.leave)(tunnel, group)
        else:
            await self._publish(
                keys.node_channel(str(node)),
                {"op": op, "app": app_id, "kind": "tunnels", "ids": [tunnel_id], "group": group},
            )
        return True

    async def join(self, app_id: str, tunnel_id: str, group: str) -> bool:
        return await self._change_membership("join", app_id, tunnel_id, group)

    async def leave(self, app_id: str, tunnel_id: str, group: str) -> bool:
        return await self._change_membership("leave", app_id, tunnel_id, group)

    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None:
        raw = _mapping(await self._call(self.redis.hgetall(keys.tunnel(app_id, tunnel_id))))
        return _record(tunnel_id, raw) if raw else None

    async def _page(self, app_id: str, index: str, cursor: str | None, limit: int) -> Page:
        start = f"({cursor}" if cursor else "-"
        ids = _texts(
            await self._call(self.redis.zrangebylex(index, start, "+", start=0, num=limit + 1))
        )
        chunk = ids[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for tunnel_id in chunk:
            pipe.hgetall(keys.tunnel(app_id, tunnel_id))
        raws = await self._call(pipe.execute()) if chunk else []
        records = [_record(t, _mapping(r)) for t, r in zip(chunk, raws, strict=True) if r]
        return Page(records, chunk[-1] if len(ids) > limit else None)

    async def list_user(self, app_id: str, user_id: str, cursor: str | None, limit: int) -> Page:
        return await self._page(app_id, keys.user_index(app_id, user_id), cursor, limit)

    async def list_group(self, app_id: str, group: str, cursor: str | None, limit: int) -> Page:
        return await self._page(app_id, keys.group_index(app_id, group), cursor, limit)

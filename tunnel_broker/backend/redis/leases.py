"""Pod leases: how the surviving pods learn that one died, and report its tunnels.

Every pod renews a lease (a score in ``tb:nodes``). A pod whose lease expired is *reaped*
by a surviving pod, under a lock: each of its tunnels still recorded as held by it is
removed from the indexes and reported closed (``tunnel.closed``, reason ``node_lost``)
exactly once. A marker tells the reaped pod, should it come back, that its tunnels were
already reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.registry import TunnelRegistry

logger = logging.getLogger("tunnel_broker.backend.redis")

# Reports a lost tunnel closed: (app_id, tunnel_id, user_id, identity, meta); returns the
# epoch of the report (webhooks/batching.py), None if nothing was reported.
LostTunnelReporter = Callable[[str, str, str, dict[str, Any], dict[str, Any], str], int | None]
# Called once a reaped tunnel's report is queued: (app_id, tunnel_id, epoch)
LetGo = Callable[[str, str, int | None], None]
# Takes a pod's journals (adoption.py): (node_id)
Adopt = Callable[[str], Awaitable[None]]


class NodeLeases:
    def __init__(
        self,
        client: aioredis.Redis,
        lease_client: aioredis.Redis,
        registry: TunnelRegistry,
        node_id: str,
        lease_seconds: float,
        report_lost: LostTunnelReporter,
        let_go: LetGo,
    ) -> None:
        self.redis = client
        self.lease_client = lease_client  # renewals only: ``connection.py``
        self.registry = registry
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.report_lost = report_lost
        self.let_go = let_go
        # Set once adoption exists: a reaped pod's journals are taken before its tunnels
        # are reported closed, so each ``tunnel.closed`` follows its tunnel's events.
        self.adopt: Adopt | None = None
        # The pods with a live lease at the last look while Redis was steady (this one
        # included once renewed). Right after an outage, the pods expected to hear what
        # is published to all: Redis restarted empty knows none of them yet.
        self.peers: frozenset[str] = frozenset()

    async def renew(self) -> bool:
        """Renew this pod's lease; True if it had none (first renewal, or another pod
        reaped this one meanwhile: a pause longer than the lease, with Redis reachable)."""
        # Expiry at three quarters of the lease, checked every eighth: a dead pod's tunnels
        # are reported within the lease, and a live pod may miss five renewals in a row
        # (a slow Redis, a long pause) before anyone thinks it dead.
        expiry = time.time() + self.lease_seconds * 0.75
        return bool(await self.lease_client.zadd(keys.NODES, {self.node_id: expiry}))

    async def alive(self, nodes: list[str]) -> set[str]:
        """Those of ``nodes`` whose lease has not expired."""
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.zscore(keys.NODES, node)
        now = time.time()
        scores = await pipe.execute()
        return {n for n, s in zip(nodes, scores, strict=True) if s is not None and s >= now}

    async def leased(self, nodes: list[str]) -> set[str]:
        """Those of ``nodes`` with a lease, expired or not."""
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.zscore(keys.NODES, node)
        scores = await pipe.execute()
        return {n for n, s in zip(nodes, scores, strict=True) if s is not None}

    async def was_reaped(self) -> bool:
        """Whether other pods reported this pod's tunnels closed (it was paused or cut
        off longer than its lease) and it has not repaired since."""
        return bool(await self.redis.exists(keys.node_reaped(self.node_id)))

    async def take_reaped_marker(self) -> bool:
        """Whether other pods reported this pod's tunnels closed while it was cut off
        (and forget that they did)."""
        return bool(await self.redis.delete(keys.node_reaped(self.node_id)))

    async def reap_expired(self) -> None:
        """Reap the pods whose lease expired; remember the others (``peers``)."""
        leases = await self.redis.zrange(keys.NODES, 0, -1, withscores=True)
        now = time.time()
        nodes = [(str(node), float(score)) for node, score in cast(Any, leases)]
        self.peers = frozenset(node for node, score in nodes if score >= now)
        for node_id in (node for node, score in nodes if score < now):
            if node_id == self.node_id:
                continue
            lock = keys.REAP_LOCK + node_id
            if not await self.redis.set(
                lock, self.node_id, nx=True, ex=int(self.lease_seconds * 4)
            ):
                continue
            try:
                lost = await self.reap(node_id)
            finally:
                await self.redis.delete(lock)
            logger.warning("node %s lost its lease; reported %d tunnels closed", node_id, lost)

    async def reap(self, node_id: str, announce: bool = True) -> int:
        """Report the tunnels ``node_id`` still holds closed; how many there were.
        ``announce=False`` for this pod's own previous run (nobody to tell)."""
        if self.adopt is not None:
            await self.adopt(node_id)
        listed = await self.registry.listed(node_id)
        if announce:
            await self.redis.set(keys.node_reaped(node_id), "1", ex=86400)
        lost = 0
        for app_id, tunnel_id in listed:
            holder = await self.registry.holder(app_id, tunnel_id)
            if holder is None or holder.node != node_id:
                continue  # closed, or taken over by a live pod meanwhile
            if holder.resume_window > 0:
                # A reliable tunnel waits for its client to resume on a live pod (its
                # pushes are kept in Redis); it ends when its window passes.
                member = "\0".join((app_id, tunnel_id, holder.conn))
                await self.redis.zadd(keys.PARKED, {member: time.time() + holder.resume_window})
                await self.registry.mark_resumable(app_id, tunnel_id, holder.conn)
                continue
            # This pod reports the tunnel closed now: it owes that event in the dead
            # pod's place (order.py).
            removed = await self.registry.remove(
                app_id, tunnel_id, holder.user_id, holder.conn, self.node_id, node_id
            )
            if removed.removed:
                lost += 1
                epoch = self.report_lost(
                    app_id, tunnel_id, holder.user_id, holder.identity, holder.meta, "node_lost"
                )
                self.let_go(app_id, tunnel_id, epoch)
        await self.redis.delete(keys.node_tunnels(node_id))
        if announce:
            await self.redis.zrem(keys.NODES, node_id)
        return lost

    async def end_parked(self) -> int:
        """End the reliable tunnels of dead pods whose resume window passed without a
        resume (``reap``); claimed one by one, so each is reported once."""
        due = await self.redis.zrangebyscore(keys.PARKED, "-inf", time.time(), start=0, num=100)
        ended = 0
        for member in map(str, cast(list[Any], due)):
            if not await self.redis.zrem(keys.PARKED, member):
                continue  # another pod claimed it
            app_id, tunnel_id, conn = member.split("\0")
            holder = await self.registry.holder(app_id, tunnel_id)
            if holder is None or holder.conn != conn:
                continue  # resumed: taken over by a live pod
            removed = await self.registry.remove(
                app_id, tunnel_id, holder.user_id, conn, self.node_id, holder.node
            )
            if removed.removed:
                ended += 1
                epoch = self.report_lost(
                    app_id,
                    tunnel_id,
                    holder.user_id,
                    holder.identity,
                    holder.meta,
                    "resume_expired",
                )
                self.let_go(app_id, tunnel_id, epoch)
        return ended

    async def goodbye(self) -> None:
        """Drop the lease so nobody reaps tunnels this pod already closed."""
        await self.redis.zrem(keys.NODES, self.node_id)
        await self.redis.delete(keys.node_tunnels(self.node_id))

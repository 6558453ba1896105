"""The Redis backend: many broker pods behave as one.

Shared state (tunnel records and their indexes: ``registry``; pod leases: ``leases``;
sessions; apps) lives in Redis. Routing uses pub/sub (``messages``): a push to named
tunnels is published to the channel of each pod holding one, a push to users, groups or
everyone is published once on the broadcast channel and every pod pushes it to its own
tunnels from its local hub. So fan-out costs one publish per push, not one per tunnel.

Failure handling, in short (docs/operations.md has the long form): a pod whose lease
expired is reaped by a surviving pod (``leases``), which adopts its undelivered events
(``adoption``) and reports its tunnels closed exactly once; while Redis is unreachable
the pod is unready (``health``), refuses new connects (1013) and API calls (503) but
keeps relaying its open tunnels; when Redis returns it rewrites its own tunnels and
events (a Redis restart may have lost them) and drops stale entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from tunnel_broker.apps import App
from tunnel_broker.backend.base import (
    Backend,
    Lease,
    TooManyGroups,
    TooManyTunnels,
)
from tunnel_broker.backend.redis import keys, routing
from tunnel_broker.backend.redis.adoption import Adoption
from tunnel_broker.backend.redis.apps import load_apps, upsert_apps
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.journal import EventJournal
from tunnel_broker.backend.redis.leases import LostTunnelReporter, NodeLeases
from tunnel_broker.backend.redis.messages import (
    Close,
    ControlMessage,
    Membership,
    Push,
    Released,
    Replace,
    encode,
)
from tunnel_broker.backend.redis.order import EventOrder
from tunnel_broker.backend.redis.presence import Presence
from tunnel_broker.backend.redis.quotas import RedisQuotas
from tunnel_broker.backend.redis.reach import PublishReach
from tunnel_broker.backend.redis.registry import TunnelRegistry
from tunnel_broker.backend.redis.rejoin import Rejoin
from tunnel_broker.backend.redis.resumes import Numberer, ResumeStore, SharedInRedis
from tunnel_broker.backend.redis.sessions import RedisSessionStore
from tunnel_broker.backend.redis.subscription import Subscription
from tunnel_broker.backend.redis.takeovers import TakeoverNotices
from tunnel_broker.backend.redis.topology import RedisTopology
from tunnel_broker.backend.redis.unrecorded import UnrecordedCloses
from tunnel_broker.backend.redis.upkeep import Upkeep
from tunnel_broker.backend.sessions import SessionStore
from tunnel_broker.errors import BackendUnavailable, TunnelQuotaExceeded
from tunnel_broker.metrics import SharedStateHealth
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.webhooks.batching import Pending
from tunnel_broker.webhooks.delivery import EventDelivery

logger = logging.getLogger("tunnel_broker.backend.redis")

Hook = Callable[[], Coroutine[Any, Any, None]]


class RedisBackend(Presence, Backend):
    name = "redis"

    def __init__(
        self,
        redis: RedisTopology | str,
        hub: Hub,
        node_id: str,
        report_lost: LostTunnelReporter,
        lease_seconds: float = 15.0,
        durable_events: bool = True,
        max_stored_bytes: Callable[[str], int] = lambda app_id: 256 * 1024**2,
        usage_retention_seconds: int = 35 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.lease = Lease()
        self.lease.valid_until = 0.0  # until the first renewal
        self.topology = RedisTopology.standalone(redis) if isinstance(redis, str) else redis
        self.redis, lease_client = self.topology.pod_clients(lease_seconds)
        self.health = RedisHealth(self.topology.kind)
        self.subscription = Subscription(
            self.topology, node_id, self.health, max(1.0, lease_seconds / 3)
        )
        self.registry = TunnelRegistry(self.redis, node_id, clock, usage_retention_seconds)
        self.quotas: RedisQuotas = RedisQuotas(self.redis, self.health, node_id, clock)
        self.leases = NodeLeases(
            self.redis,
            lease_client,
            self.registry,
            node_id,
            lease_seconds,
            report_lost,
            lambda app_id, tunnel_id, epoch: self.order.let_go(app_id, tunnel_id, epoch),
        )
        self.journal = EventJournal(
            self.redis, node_id, self.health, durable_events, max_stored_bytes
        )
        self.order = EventOrder(
            self.registry,
            self.leases,
            self.journal,
            node_id,
            self._publish,
            poll_seconds=min(1.0, lease_seconds / 8),
        )
        self.adoption = Adoption(self.journal, self.leases, self.order)
        self.leases.adopt = self.adoption.adopt
        self.reach = PublishReach(self.health, self.leases)
        self.takeovers = TakeoverNotices(self._publish, self.reach)
        self.unrecorded = UnrecordedCloses(self.registry, self.order, node_id)
        self.rejoin = Rejoin(self.registry, self.order, node_id, self._new_conn)
        self.upkeep = Upkeep(self)
        self.resumes = ResumeStore(self.redis, node_id, self.health)
        self.sequences = SharedInRedis(
            self.resumes, Numberer(self.resumes, self.health.mark_unhealthy, hub.get), self.health
        )
        # Each socket's connection id: a takeover or reaping only removes the record of
        # the connection it saw, never a newer one's.
        self._conns: dict[Tunnel, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.on_apps_changed: Hook | None = None
        self.on_repaired: Hook | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.redis.ping()
            await self.upkeep.first_renewal()
        except RedisError as exc:
            # Start anyway: the pod is unready until Redis answers, then catches up.
            where = self.topology.describe()
            logger.error("redis unreachable at start (%s, %s); retrying", where, type(exc).__name__)
        else:
            self.health.mark_healthy()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.upkeep.run(), name="redis-lease"),
            loop.create_task(
                self.subscription.run(self._apply, lambda: self.on_apps_changed),
                name="redis-subscriber",
            ),
            loop.create_task(self.order.run(), name="redis-event-order"),
        ]
        self.quotas.start()
        if self.health.healthy:
            with contextlib.suppress(TimeoutError):
                subscribed = self.subscription.subscribed.wait()
                await asyncio.wait_for(subscribed, max(1.0, self.lease_seconds / 3))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.health.healthy:
            await self.unrecorded.record_all()
        await self.quotas.stop()  # what it used reported, what it held given back
        await self.order.stop()
        await self.resumes.stop()
        await self.journal.stop()
        with contextlib.suppress(RedisError):
            await self.leases.goodbye()
        await self.topology.close(self.redis)
        await self.topology.close(self.leases.lease_client)
        await self.subscription.close()

    def ready(self) -> bool:
        return self.health.healthy and self.subscription.subscribed.is_set()

    def use_delivery(self, delivery: EventDelivery) -> None:
        self.order.delivery = delivery
        delivery.store = self.journal

    def begin_drain(self) -> None:
        self.adoption.enabled = False

    def shared_state_health(self) -> SharedStateHealth:
        return self.health.snapshot()

    def stored_bytes(self) -> dict[str, int]:
        return self.journal.stored_bytes() if self.journal.durable else {}

    async def hand_over(self, undelivered: dict[str, list[Pending]]) -> int:
        """Leave the undelivered events in this pod's journals for the pod that adopts
        them once this one has dropped its lease."""
        self.adoption.enabled = False
        kept = 0
        for app_id, pendings in undelivered.items():
            try:
                await self.journal.keep(app_id, pendings)
            except RedisError as exc:
                logger.error("app %s: undelivered events could not be kept: %s", app_id, exc)
                continue
            kept += len(pendings)
        return kept

    def session_store(self) -> SessionStore:
        return RedisSessionStore(self.redis, self.health)

    async def shared_apps(self, publish: list[App]) -> list[App] | None:
        try:
            if publish:
                await upsert_apps(self.redis, publish, self.topology)
            return await load_apps(self.redis)
        except RedisError as exc:
            raise BackendUnavailable(f"apps not readable from redis: {exc}") from exc

    # ---- pub/sub ------------------------------------------------------------------------

    async def publish(self, channel: str, message: ControlMessage) -> int:
        """Publish; how many subscribers received it."""
        data = encode(message, self.node_id)
        return await self.health.call(self.topology.publish(self.redis, channel, data))

    _publish = publish

    async def _apply(self, message: ControlMessage) -> None:
        """Carry out another pod's message on this pod's tunnels, through the hub."""
        hub = self.hub
        if isinstance(message, Push):
            await routing.apply(self, message)
        elif isinstance(message, Close):
            hub.close(message.app_id, message.target, message.code, message.reason)
        elif isinstance(message, Replace):
            old = hub.get(message.app_id, message.tunnel_id)
            if old is not None and self._conns.get(old) == message.conn:
                old.close_replaced(CloseCode.REPLACED, "replaced")
            elif self.unrecorded.names(message.app_id, message.tunnel_id, message.conn):
                await self.unrecorded.record((message.app_id, message.tunnel_id))
            else:  # that socket is gone already: owe only what it left undelivered
                self.order.let_go(message.app_id, message.tunnel_id, None)
        elif isinstance(message, Released):
            await self.order.released(message.app_id, message.tunnel_id)
        else:
            hub.change_membership(message.app_id, message.tunnel_id, message.group, message.join)

    # ---- the Backend interface ------------------------------------------------------

    def conn(self, tunnel: Tunnel) -> str:
        """The socket's connection id (its record names it)."""
        return self._conns.setdefault(tunnel, os.urandom(8).hex())

    def _new_conn(self, tunnel: Tunnel) -> str:
        self._conns.pop(tunnel, None)
        return self.conn(tunnel)

    async def attach(self, tunnel: Tunnel) -> bool:
        app_id = tunnel.app.id
        if isinstance(tunnel, ReliableTunnel):  # numbered by Redis from the first push on
            tunnel.shared = self.sequences
        here = self.hub.get(app_id, tunnel.tunnel_id) is not None
        limits = tunnel.app.limits
        limit = 0 if here else limits.max_tunnels_per_user
        app_limit = 0 if here else limits.max_tunnels or 0
        try:
            written = await self.health.call(
                self.registry.write(tunnel, self.conn(tunnel), limit, here, app_limit)
            )
        except (BackendUnavailable, TooManyTunnels, TunnelQuotaExceeded):
            self._conns.pop(tunnel, None)
            raise
        self.unrecorded.began(tunnel, self.conn(tunnel), written.life)
        took_over_here = self.hub.attach(tunnel) is not None
        self.order.attached(app_id, tunnel.tunnel_id, tunnel.epoch, written.owed)
        # Groups the tunnel had before (joined on an older socket, here or elsewhere).
        for group in set(written.groups) - tunnel.groups:
            self.hub.join(tunnel, group)
        if isinstance(tunnel, ReliableTunnel):
            took_over = bool(written.previous_node)
            await self.sequences.attached(
                tunnel, took_over, written.sent, written.accepted, written.sequences
            )
        if not written.previous_node or written.previous_node == self.node_id:
            return took_over_here
        # Taken over from another pod: that pod closes its socket with 4409.
        tunnel.approve()
        replace = Replace(app_id, tunnel.tunnel_id, written.previous_conn)
        await self.takeovers.announce(written.previous_node, replace)
        return True

    async def parked(self, tunnel: Tunnel) -> None:
        conn = self._conns.get(tunnel)
        if conn is not None and self.health.healthy:
            with contextlib.suppress(RedisError):  # presence only: not worth an outage
                await self.registry.mark_resumable(tunnel.app.id, tunnel.tunnel_id, conn)

    async def detach(self, tunnel: Tunnel) -> None:
        self.hub.detach(tunnel)
        conn = self._conns.pop(tunnel, None)
        app_id, tunnel_id = tunnel.app.id, tunnel.tunnel_id
        self.order.letting_go(app_id, tunnel_id)
        if conn is None:
            self.order.let_go(app_id, tunnel_id, tunnel.epoch)
            return
        life = self.unrecorded.ended(tunnel, conn)
        if not self.health.healthy and not tunnel.replaced:
            self.unrecorded.noted(tunnel, conn, life)  # recorded when Redis answers again
            return
        if self.health.healthy:
            owes = self.order.owes(app_id, tunnel.epoch, reports_closed=not tunnel.replaced)
            try:
                removed = await self.registry.remove(
                    app_id, tunnel_id, tunnel.user_id, conn, self.node_id if owes else ""
                )
                if not removed.removed and removed.holder not in ("", self.node_id):
                    # Taken over by another pod first (its message is on the way): the
                    # tunnel lives on there, so this socket's end is not a close.
                    tunnel.replaced = True
                elif not removed.removed and await self.leases.was_reaped():
                    tunnel.replaced = True  # reported closed by the pod that reaped this one
                if self.hub.get(app_id, tunnel_id) is None:
                    await self.registry.unlist(self.node_id, app_id, tunnel_id)
            except RedisError as exc:
                self.health.mark_unhealthy(exc)
                if not tunnel.replaced:
                    self.unrecorded.noted(tunnel, conn, life)
                    return
        self.order.let_go(app_id, tunnel_id, tunnel.epoch)

    async def _owners(self, app_id: str, tunnel_ids: tuple[str, ...]) -> dict[str, str]:
        return await self.health.call(self.registry.owners(app_id, tunnel_ids))

    async def push(self, app_id: str, target: Target, payload: str | bytes) -> list[str]:
        return await routing.push(self, app_id, target, payload)

    async def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        message = Close(app_id, target, code, reason)
        if target.kind == "tunnels":
            owners = await self._owners(app_id, target.ids)
            for node in set(owners.values()):
                if node == self.node_id:
                    self.hub.close(app_id, target, code, reason)
                else:
                    await self._publish(keys.node_channel(node), message)
            return len(owners)
        count = 0
        if target.kind in ("users", "groups"):
            count = await self.health.call(self.registry.count(app_id, target.kind, target.ids))
        self.hub.close(app_id, target, code, reason)
        self.reach.check_all(await self._publish(keys.BROADCAST, message))
        return count

    async def _change_membership(
        self, app_id: str, tunnel_id: str, group: str, join: bool, max_groups: int = 0
    ) -> bool:
        node = await self.health.call(
            self.registry.change_membership(app_id, tunnel_id, group, join, max_groups)
        )
        if not node:
            return False
        if node == "!":
            raise TooManyGroups(f"tunnel is already in {max_groups} groups")
        if node == self.node_id:
            self.hub.change_membership(app_id, tunnel_id, group, join)
        else:
            await self._publish(keys.node_channel(node), Membership(app_id, tunnel_id, group, join))
        return True

    async def join(self, app_id: str, tunnel_id: str, group: str, max_groups: int) -> bool:
        return await self._change_membership(app_id, tunnel_id, group, True, max_groups)

    async def leave(self, app_id: str, tunnel_id: str, group: str) -> bool:
        return await self._change_membership(app_id, tunnel_id, group, join=False)

"""The embedded single-process backend: the local hub *is* the registry.

Events it could not deliver when the process stopped are kept in a file (if configured,
as by default) and delivered first by the next process (``webhooks/handover.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from tunnel_broker.backend.base import (
    Backend,
    Lease,
    Page,
    TooManyGroups,
    TooManyTunnels,
    TunnelQuotaExceeded,
    TunnelRecord,
)
from tunnel_broker.backend.quotas import LocalQuotas
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.webhooks.batching import Pending
from tunnel_broker.webhooks.delivery import EventDelivery
from tunnel_broker.webhooks.handover import FileHandover

logger = logging.getLogger("tunnel_broker.backend.memory")


def page_of(tunnels: Iterable[Tunnel], node_id: str, cursor: str | None, limit: int) -> Page:
    ordered = sorted(tunnels, key=lambda t: t.tunnel_id)
    if cursor is not None:
        ordered = [t for t in ordered if t.tunnel_id > cursor]
    chunk = ordered[:limit]
    next_cursor = chunk[-1].tunnel_id if len(ordered) > limit else None
    return Page([TunnelRecord.of(t, node_id) for t in chunk], next_cursor)


class MemoryBackend(Backend):
    name = "memory"

    def __init__(
        self,
        hub: Hub,
        node_id: str,
        handover: FileHandover | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.node_id = node_id
        self.handover = handover
        self.delivery: EventDelivery | None = None
        self.lease = Lease()  # never extended: one process relays for as long as it runs
        self.quotas = LocalQuotas(self._count, clock)

    def use_delivery(self, delivery: EventDelivery) -> None:
        self.delivery = delivery

    async def start(self) -> None:
        if self.handover is None or self.delivery is None:
            return
        try:
            left = self.handover.take()
        except OSError as exc:
            logger.error("events a previous process left could not be read: %s", exc)
            return
        for app_id, events in left.items():
            self.delivery.emit_adopted(app_id, [Pending(event) for event in events])

    async def hand_over(self, undelivered: dict[str, list[Pending]]) -> int:
        if self.handover is None:
            return 0
        try:
            return self.handover.save(
                {app_id: [p.event for p in pendings] for app_id, pendings in undelivered.items()}
            )
        except OSError as exc:
            logger.error("undelivered events could not be kept in %s: %s", self.handover.path, exc)
            return 0

    async def attach(self, tunnel: Tunnel) -> bool:
        app_id = tunnel.app.id
        if self.hub.get(app_id, tunnel.tunnel_id) is None:  # new: not a takeover, nor a resume
            limits = tunnel.app.limits
            held = len(self.hub.user_tunnels(app_id, tunnel.user_id))
            if held >= limits.max_tunnels_per_user:
                raise TooManyTunnels(tunnel.user_id)
            if limits.max_tunnels is not None and self._count(app_id) >= limits.max_tunnels:
                raise TunnelQuotaExceeded(f"app {app_id} has its {limits.max_tunnels} tunnels open")
        return self.hub.attach(tunnel) is not None

    async def detach(self, tunnel: Tunnel) -> None:
        self.hub.detach(tunnel)

    async def push(self, app_id: str, target: Target, payload: str | bytes) -> list[str]:
        pushed = await self.hub.push_sliced(app_id, target, payload)
        if target.kind != "tunnels":
            return []
        return [t for t in dict.fromkeys(target.ids) if t not in pushed]

    async def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        return self.hub.close(app_id, target, code, reason)

    async def join(self, app_id: str, tunnel_id: str, group: str, max_groups: int) -> bool:
        tunnel = self.hub.open_tunnel(app_id, tunnel_id)
        if tunnel is None:
            return False
        if group not in tunnel.groups and len(tunnel.groups) >= max_groups:
            raise TooManyGroups(f"tunnel is already in {max_groups} groups")
        self.hub.join(tunnel, group)
        return True

    async def leave(self, app_id: str, tunnel_id: str, group: str) -> bool:
        tunnel = self.hub.open_tunnel(app_id, tunnel_id)
        if tunnel is None:
            return False
        self.hub.leave(tunnel, group)
        return True

    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None:
        tunnel = self.hub.open_tunnel(app_id, tunnel_id)
        return None if tunnel is None else TunnelRecord.of(tunnel, self.node_id)

    async def list_user(self, app_id: str, user_id: str, cursor: str | None, limit: int) -> Page:
        return page_of(self.hub.user_tunnels(app_id, user_id), self.node_id, cursor, limit)

    async def list_group(self, app_id: str, group: str, cursor: str | None, limit: int) -> Page:
        return page_of(self.hub.group_tunnels(app_id, group), self.node_id, cursor, limit)

    async def list_app(self, app_id: str, cursor: str | None, limit: int) -> Page:
        tunnels = self.hub.resolve(app_id, Target("all"))
        return page_of(tunnels, self.node_id, cursor, limit)

    async def count_app(self, app_id: str) -> int:
        return self._count(app_id)

    def _count(self, app_id: str) -> int:
        return self.hub.count_by_app().get(app_id, 0)

"""The embedded single-process backend: the local hub *is* the registry."""

from __future__ import annotations

from collections.abc import Iterable

from tunnel_broker.backend.base import Backend, Page, TooManyTunnels, TunnelRecord
from tunnel_broker.closecodes import CloseCode
from tunnel_broker.hub import Hub
from tunnel_broker.targets import Target
from tunnel_broker.tunnel import Tunnel


def take_over(old: Tunnel, new: Tunnel) -> None:
    """Hand a tunnel's state from the socket it had to the socket replacing it."""
    old.replaced = True
    new.groups |= old.groups
    if old.approved.done():
        if not new.approved.done():
            new.approved.set_result(None)
    else:
        new.approved = old.approved
    old.close(CloseCode.REPLACED, "replaced")


def page_of(tunnels: Iterable[Tunnel], node_id: str, cursor: str | None, limit: int) -> Page:
    ordered = sorted(tunnels, key=lambda t: t.tunnel_id)
    if cursor is not None:
        ordered = [t for t in ordered if t.tunnel_id > cursor]
    chunk = ordered[:limit]
    next_cursor = chunk[-1].tunnel_id if len(ordered) > limit else None
    return Page([TunnelRecord.of(t, node_id) for t in chunk], next_cursor)


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, hub: Hub, node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id

    async def attach(self, tunnel: Tunnel) -> bool:
        app_id = tunnel.app.id
        if self.hub.get(app_id, tunnel.tunnel_id) is None:
            held = len(self.hub.user_tunnels(app_id, tunnel.user_id))
            if held >= tunnel.app.limits.max_tunnels_per_user:
                raise TooManyTunnels(tunnel.user_id)
        previous = self.hub.add(tunnel)
        if previous is None:
            return False
        take_over(previous, tunnel)
        # Groups joined on the old socket are indexed for the new one too.
        for group in tunnel.groups:
            self.hub.join(tunnel, group)
        return True

    async def detach(self, tunnel: Tunnel) -> None:
        self.hub.remove(tunnel)

    async def deliver(self, app_id: str, target: Target, payload: str | bytes) -> list[str]:
        delivered = await self.hub.deliver_sliced(app_id, target, payload)
        if target.kind != "tunnels":
            return []
        return [t for t in dict.fromkeys(target.ids) if t not in delivered]

    async def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        closed = 0
        for tunnel in self.hub.resolve(app_id, target):
            if tunnel.close(code, reason):
                closed += 1
        return closed

    def _open(self, app_id: str, tunnel_id: str) -> Tunnel | None:
        tunnel = self.hub.get(app_id, tunnel_id)
        return None if tunnel is None or tunnel.closing else tunnel

    async def join(self, app_id: str, tunnel_id: str, group: str) -> bool:
        tunnel = self._open(app_id, tunnel_id)
        if tunnel is None:
            return False
        self.hub.join(tunnel, group)
        return True

    async def leave(self, app_id: str, tunnel_id: str, group: str) -> bool:
        tunnel = self._open(app_id, tunnel_id)
        if tunnel is None:
            return False
        self.hub.leave(tunnel, group)
        return True

    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None:
        tunnel = self._open(app_id, tunnel_id)
        return None if tunnel is None else TunnelRecord.of(tunnel, self.node_id)

    async def list_user(self, app_id: str, user_id: str, cursor: str | None, limit: int) -> Page:
        return page_of(self.hub.user_tunnels(app_id, user_id), self.node_id, cursor, limit)

    async def list_group(self, app_id: str, group: str, cursor: str | None, limit: int) -> Page:
        return page_of(self.hub.group_tunnels(app_id, group), self.node_id, cursor, limit)

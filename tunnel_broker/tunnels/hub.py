"""The tunnels open on this process, indexed by tunnel, user, group and app.

The hub is purely local bookkeeping. Which process holds a tunnel, and how a push reaches
it, is the backend's business (``backend/``); the hub only answers "which of *my*
tunnels are these" and carries out pushes, closes and group changes on them. Backends
change local tunnels only through the hub and the tunnel's own methods.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator

from tunnel_broker.targets import Target
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.tunnels.writer import Message, payload_bytes, send_message
from tunnel_broker.usage.counters import UsageCounters

Key = tuple[str, str]
PUSH_SLICE = 500


class Hub:
    def __init__(self, usage: UsageCounters | None = None) -> None:
        self._tunnels: dict[Key, Tunnel] = {}
        self._by_user: dict[Key, set[Tunnel]] = defaultdict(set)
        self._by_group: dict[Key, set[Tunnel]] = defaultdict(set)
        self._by_app: dict[str, set[Tunnel]] = defaultdict(set)
        self.usage = usage or UsageCounters()

    def __len__(self) -> int:
        return len(self._tunnels)

    def __iter__(self) -> Iterator[Tunnel]:
        return iter(list(self._tunnels.values()))

    def count_by_app(self) -> dict[str, int]:
        return {app_id: len(tunnels) for app_id, tunnels in self._by_app.items()}

    def get(self, app_id: str, tunnel_id: str) -> Tunnel | None:
        return self._tunnels.get((app_id, tunnel_id))

    def attach(self, tunnel: Tunnel) -> Tunnel | None:
        """Index ``tunnel``; if a socket of this process held its id, ``tunnel`` takes
        that one over (groups, approval; the old socket closes with 4409). Returns the
        replaced socket."""
        previous = self._add(tunnel)
        if previous is not None:
            tunnel.take_over(previous)
            for group in tunnel.groups:
                self.join(tunnel, group)
        return previous

    def _add(self, tunnel: Tunnel) -> Tunnel | None:
        app_id = tunnel.app.id
        previous = self._tunnels.get((app_id, tunnel.tunnel_id))
        if previous is not None:
            self.detach(previous)
        self._tunnels[(app_id, tunnel.tunnel_id)] = tunnel
        self._by_user[(app_id, tunnel.user_id)].add(tunnel)
        self._by_app[app_id].add(tunnel)
        for group in tunnel.groups:
            self._by_group[(app_id, group)].add(tunnel)
        self.usage.of(app_id).tunnel_opened()
        return previous

    def detach(self, tunnel: Tunnel) -> bool:
        """Unindex ``tunnel`` if it is the current holder of its id."""
        app_id = tunnel.app.id
        if self._tunnels.get((app_id, tunnel.tunnel_id)) is not tunnel:
            return False
        del self._tunnels[(app_id, tunnel.tunnel_id)]
        _discard(self._by_user, (app_id, tunnel.user_id), tunnel)
        for group in tunnel.groups:
            _discard(self._by_group, (app_id, group), tunnel)
        self.usage.of(app_id).tunnel_closed()
        apps = self._by_app.get(app_id)
        if apps is not None:
            apps.discard(tunnel)
            if not apps:
                del self._by_app[app_id]
        return True

    def join(self, tunnel: Tunnel, group: str) -> None:
        tunnel.groups.add(group)
        if self._tunnels.get((tunnel.app.id, tunnel.tunnel_id)) is tunnel:
            self._by_group[(tunnel.app.id, group)].add(tunnel)

    def leave(self, tunnel: Tunnel, group: str) -> None:
        tunnel.groups.discard(group)
        _discard(self._by_group, (tunnel.app.id, group), tunnel)

    def user_tunnels(self, app_id: str, user_id: str) -> set[Tunnel]:
        return self._by_user.get((app_id, user_id), set())

    def group_tunnels(self, app_id: str, group: str) -> set[Tunnel]:
        return self._by_group.get((app_id, group), set())

    def push(self, app_id: str, target: Target, payload: str | bytes) -> set[str]:
        """Send ``payload`` to the local tunnels of ``target``; return who got it."""
        return self._push_to(app_id, self.resolve(app_id, target), send_message(payload))

    async def push_sliced(self, app_id: str, target: Target, payload: str | bytes) -> set[str]:
        """``push`` for targets of any size: a broadcast to 10,000 tunnels takes a couple
        of hundred milliseconds, so it yields to the event loop between slices rather than
        stalling every other tunnel, request and ping for that long."""
        tunnels = list(self.resolve(app_id, target))
        message = send_message(payload)
        if len(tunnels) <= PUSH_SLICE:
            return self._push_to(app_id, tunnels, message)
        pushed: set[str] = set()
        for start in range(0, len(tunnels), PUSH_SLICE):
            pushed |= self._push_to(app_id, tunnels[start : start + PUSH_SLICE], message)
            await asyncio.sleep(0)
        return pushed

    def _push_to(self, app_id: str, tunnels: Iterable[Tunnel], message: Message) -> set[str]:
        pushed: set[str] = set()
        for tunnel in tunnels:
            if tunnel.push_message(message):
                pushed.add(tunnel.tunnel_id)
        if pushed:
            counters = self.usage.of(app_id)
            counters.messages_out += len(pushed)
            counters.bytes_out += len(pushed) * payload_bytes(message)
        return pushed

    def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        """Close the local tunnels of ``target``; return how many were open."""
        return sum(tunnel.close(code, reason) for tunnel in self.resolve(app_id, target))

    def open_tunnel(self, app_id: str, tunnel_id: str) -> Tunnel | None:
        """The local tunnel of this id, unless it is closing."""
        tunnel = self._tunnels.get((app_id, tunnel_id))
        return None if tunnel is None or tunnel.closing else tunnel

    def awaiting_approval(self, app_id: str, tunnel_id: str) -> bool:
        """Whether a local tunnel waits for its ``tunnel.connected`` to be acknowledged."""
        tunnel = self._tunnels.get((app_id, tunnel_id))
        return tunnel is not None and not tunnel.approved.done()

    def change_membership(self, app_id: str, tunnel_id: str, group: str, join: bool) -> bool:
        """Join or leave ``group`` by tunnel id; False if no open local tunnel has it."""
        tunnel = self._tunnels.get((app_id, tunnel_id))
        if tunnel is None:
            return False
        (self.join if join else self.leave)(tunnel, group)
        return True

    def resolve(self, app_id: str, target: Target) -> Iterable[Tunnel]:
        """The local tunnels a target names, each once."""
        if target.kind == "all":
            return list(self._by_app.get(app_id, ()))
        if target.kind == "tunnels":
            found = (self._tunnels.get((app_id, t)) for t in dict.fromkeys(target.ids))
            return [t for t in found if t is not None]
        index = self._by_user if target.kind == "users" else self._by_group
        if len(target.ids) == 1:
            return list(index.get((app_id, target.ids[0]), ()))
        seen: set[Tunnel] = set()
        for name in target.ids:
            seen.update(index.get((app_id, name), ()))
        return seen


def _discard(index: dict[Key, set[Tunnel]], key: Key, tunnel: Tunnel) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(tunnel)
        if not members:
            del index[key]

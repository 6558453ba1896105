"""Where a reliable tunnel's sequences live when one pod must not keep them alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel as Tunnel


class SharedSequences(Protocol):
    """Where a reliable tunnel's sequences live when a pod must not keep them alone
    (Redis mode: ``backend/redis/resumes.py``): pushes are numbered there, and the tunnel
    writes what it is given in order (``Tunnel.push_numbered``)."""

    def push(self, tunnel: Tunnel, payload: str | bytes) -> bool:
        """Number a push to ``tunnel`` (then ``tunnel.push_numbered``)."""

    def refill(self, tunnel: Tunnel, after: int, upto: int) -> None:
        """Fetch the pushes numbered ``after + 1`` to ``upto`` that did not come here."""

    def acknowledged(self, tunnel: Tunnel, seq: int) -> None: ...

    def accepted(self, tunnel: Tunnel, seq: int) -> None: ...

"""The backend interface: where tunnels are registered, and how pushes, closes and group
changes reach them wherever they are.

A backend raises ``BackendUnavailable`` when the shared state cannot be reached (the API
answers 503), ``TooManyTunnels`` when an attach would exceed the user's limit and
``TunnelQuotaExceeded`` the app's.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from tunnel_broker.apps import App
from tunnel_broker.backend.quotas import Quotas
from tunnel_broker.backend.sessions import MemorySessionStore, SessionStore
from tunnel_broker.errors import (
    BackendUnavailable,
    TooManyGroups,
    TooManyTunnels,
    TunnelQuotaExceeded,
)
from tunnel_broker.metrics import SharedStateHealth
from tunnel_broker.targets import Target
from tunnel_broker.timestamps import iso_time
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.webhooks.batching import Pending
from tunnel_broker.webhooks.delivery import EventDelivery

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Page",
    "TooManyGroups",
    "TooManyTunnels",
    "TunnelQuotaExceeded",
    "TunnelRecord",
]


@dataclass(frozen=True, slots=True)
class TunnelRecord:
    """What presence queries return about a tunnel, wherever it is held."""

    tunnel_id: str
    user_id: str
    identity: dict[str, Any]
    meta: dict[str, Any]
    groups: tuple[str, ...]
    connected_at: float
    node_id: str
    # "open", or "resumable": a reliable tunnel whose socket dropped, waiting for its
    # client within the resume window (pushes to it are kept for it).
    state: str = "open"

    @classmethod
    def of(cls, tunnel: Tunnel, node_id: str) -> TunnelRecord:
        return cls(
            tunnel.tunnel_id,
            tunnel.user_id,
            tunnel.identity,
            tunnel.meta,
            tuple(sorted(tunnel.groups)),
            tunnel.connected_at,
            node_id,
            "resumable" if tunnel.parked else "open",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tunnel_id": self.tunnel_id,
            "user_id": self.user_id,
            "identity": self.identity,
            "meta": self.meta,
            "groups": list(self.groups),
            "connected_at": iso_time(self.connected_at),
            "node_id": self.node_id,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Page:
    records: list[TunnelRecord] = field(default_factory=list)
    next_cursor: str | None = None


class Lease:
    """Until when this pod may relay what its sockets send (monotonic seconds).

    A pod whose lease may have run out (paused longer than it, or cut off from Redis) may
    have been reaped, its tunnels reported closed: what it relayed then would follow
    their ``tunnel.closed``. Its readers wait for the next renewal instead, by which time
    a reaped pod's sockets have rejoined (``backend/redis/rejoin.py``). A single process
    has no lease: forever."""

    def __init__(self) -> None:
        self.valid_until = math.inf
        self._renewal = asyncio.Event()

    def extend(self, until: float) -> None:
        self.valid_until = until
        self._renewal.set()
        self._renewal = asyncio.Event()

    async def renewed(self) -> None:
        await self._renewal.wait()


class Backend(ABC):
    """Registry of open tunnels and router of pushes and closes to them."""

    name: str
    lease: Lease  # each backend its own: a lease is extended by one pod's renewals
    quotas: Quotas  # the apps' quotas, counted where this backend keeps its state

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to shared state; called once before serving."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources; idempotent."""

    def ready(self) -> bool:
        return True

    def use_delivery(self, delivery: EventDelivery) -> None:  # noqa: B027 - optional hook
        """Event delivery, for backends that order events across pods or keep them
        across restarts (it is built after the backend)."""

    def begin_drain(self) -> None:  # noqa: B027 - optional hook
        """The node is leaving: take on no more work (such as other pods' events)."""

    async def hand_over(self, undelivered: dict[str, list[Pending]]) -> int:
        """Keep the events this process could not deliver (app id -> events, in order)
        for whoever delivers next; how many were kept."""
        return 0

    def shared_state_health(self) -> SharedStateHealth | None:
        """For ``/metrics``: the health of the state pods share (none in one process)."""
        return None

    def stored_bytes(self) -> dict[str, int]:
        """Durable events: bytes of each app's undelivered events kept in shared state."""
        return {}

    def session_store(self) -> SessionStore:
        """Where WeChat login sessions live with this backend."""
        return MemorySessionStore()

    async def shared_apps(self, publish: list[App]) -> list[App] | None:
        """Publish ``publish`` to the apps every node shares, and return those apps;
        None when apps are not shared (a single node keeps its own)."""
        return None

    @abstractmethod
    async def attach(self, tunnel: Tunnel) -> bool:
        """Register a just-connected tunnel, taking over an older socket with the same id
        (closed with 4409) wherever it is; True if it took one over. Raises
        ``TooManyTunnels`` for a new tunnel of a user at the limit, and
        ``TunnelQuotaExceeded`` for one of an app at its ``max_tunnels``: checked here,
        in the same step as the registration, so simultaneous connects cannot both slip
        in. A takeover or a resume is no new tunnel; one waiting for a resume counts."""

    async def parked(self, tunnel: Tunnel) -> None:  # noqa: B027 - optional hook
        """A reliable tunnel's socket dropped and the tunnel waits for a resume: what
        presence shows (``TunnelRecord.state``); a local tunnel shows it by itself."""

    @abstractmethod
    async def detach(self, tunnel: Tunnel) -> None:
        """Forget a closed tunnel unless a newer socket has taken its id over."""

    @abstractmethod
    async def push(self, app_id: str, target: Target, payload: str | bytes) -> list[str]:
        """Send a payload to a target's clients; return the named tunnel ids that are not
        open."""

    @abstractmethod
    async def close(self, app_id: str, target: Target, code: int, reason: str) -> int:
        """Close the target's tunnels; return how many were open."""

    @abstractmethod
    async def join(self, app_id: str, tunnel_id: str, group: str, max_groups: int) -> bool:
        """Add an open tunnel to a group; False if the tunnel is not open. Raises
        ``TooManyGroups`` when the tunnel is in ``max_groups`` other groups already:
        checked in the same step as the join, so concurrent joins cannot exceed it."""

    @abstractmethod
    async def leave(self, app_id: str, tunnel_id: str, group: str) -> bool: ...

    @abstractmethod
    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None: ...

    @abstractmethod
    async def list_user(
        self, app_id: str, user_id: str, cursor: str | None, limit: int
    ) -> Page: ...

    @abstractmethod
    async def list_group(self, app_id: str, group: str, cursor: str | None, limit: int) -> Page: ...

    @abstractmethod
    async def list_app(self, app_id: str, cursor: str | None, limit: int) -> Page:
        """A page of the app's tunnels, open or waiting for a resume, all pods."""

    @abstractmethod
    async def count_app(self, app_id: str) -> int:
        """How many tunnels the app has, as ``list_app`` pages them (the tunnel quota's
        count)."""

"""What each app did on this process since the counts were last taken: plain integers on
slotted objects, one per app, bumped on the hot path.

A relayed message costs a dictionary lookup and two additions here (a Prometheus child's
``inc()`` takes a lock; ``bench/broker_bench.py --metering`` has the figure). Metrics
read these counters at scrape time; usage metering (``usage/meter.py``) takes the
difference since its last flush.
"""

from __future__ import annotations

from collections.abc import Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tunnel_broker.webhooks.events import EncodedEvent


class Tap(Protocol):
    """Where a traced app's activity is also shown as it happens (the live trace):
    ``AppCounters.tap`` is ``None`` on an app nobody traces, checked once per event."""

    def event(self, app_id: str, event: EncodedEvent) -> None:
        """A webhook event as it is emitted (connected, message, closed)."""

    def push(self, app_id: str, target: Any, payload: str | bytes, via: str) -> None:
        """A message the business server sent (``via``: ``api`` or ``reply``), once
        whatever its fan-out, on the pod that took it."""

    def delivery(self, app_id: str, record: dict[str, Any]) -> None:
        """A webhook request's outcome (the record the deliveries log keeps)."""


COUNTS = (
    "messages_in",
    "bytes_in",
    "messages_out",
    "bytes_out",
    "pushes",
    "push_bytes",
    "webhook_requests",
    "webhook_failures",
    "webhook_retries",
    "webhook_events",
    "api_calls",
    "logins",
    "tunnels_opened",
)
"""The monotonic counts of an app, in the order usage reports them:
``messages_in``/``bytes_in`` client messages relayed; ``messages_out``/``bytes_out``
deliveries to sockets (a push to 100 tunnels is 100); ``pushes``/``push_bytes`` messages
the business server sent (API and webhook replies, each once whatever its fan-out)."""


class AppCounters:
    __slots__ = (*COUNTS, "tap", "open_tunnels", "peak_tunnels", "_tunnel_seconds", "_since")

    def __init__(self) -> None:
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.pushes = 0
        self.push_bytes = 0
        self.webhook_requests = 0
        self.webhook_failures = 0
        self.webhook_retries = 0
        self.webhook_events = 0
        self.api_calls = 0
        self.logins = 0
        self.tunnels_opened = 0
        self.tap: Tap | None = None
        self.open_tunnels = 0
        self.peak_tunnels = 0  # since the peak was last taken (``take_peak``)
        self._tunnel_seconds = 0.0
        self._since = monotonic()

    def tunnel_opened(self, now: float | None = None) -> None:
        self._integrate(monotonic() if now is None else now)
        self.open_tunnels += 1
        self.tunnels_opened += 1
        if self.open_tunnels > self.peak_tunnels:
            self.peak_tunnels = self.open_tunnels

    def tunnel_closed(self, now: float | None = None) -> None:
        self._integrate(monotonic() if now is None else now)
        self.open_tunnels -= 1

    def _integrate(self, now: float) -> None:
        self._tunnel_seconds += self.open_tunnels * (now - self._since)
        self._since = now

    def tunnel_seconds(self, now: float | None = None) -> float:
        """Seconds of open tunnels so far, summed over tunnels (the integral of the
        count): monotonic, like the other counts."""
        self._integrate(monotonic() if now is None else now)
        return self._tunnel_seconds

    def take_peak(self) -> int:
        """The most tunnels open at once since the last call; restarts from the number
        open now."""
        peak, self.peak_tunnels = self.peak_tunnels, self.open_tunnels
        return peak

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


class UsageCounters:
    """Every app's counters on this process, created on first use and kept (an app's
    counts must survive its tunnels)."""

    def __init__(self) -> None:
        self._apps: dict[str, AppCounters] = {}

    def of(self, app_id: str) -> AppCounters:
        counters = self._apps.get(app_id)
        if counters is None:
            counters = self._apps[app_id] = AppCounters()
        return counters

    def __iter__(self) -> Iterator[tuple[str, AppCounters]]:
        return iter(list(self._apps.items()))

    def totals(self, name: str) -> dict[str, int]:
        """One count of every app (for metrics)."""
        return {app_id: getattr(c, name) for app_id, c in self._apps.items()}

"""Which events go into the next webhook request, and when: pure bookkeeping, no I/O.

An app's events wait in one queue. A batch takes queued events oldest first, skipping
those of a tunnel that already has a batch in flight (and everything after them of that
tunnel), so each tunnel's events are delivered in order while other tunnels proceed.

When to send:
- nothing in flight and traffic sparse: at once (an idle app adds no latency);
- nothing in flight and traffic steady (events less than ``linger`` apart): when the
  oldest event is ``linger`` old or a batch is full, because a request costs several
  times what an event does, and waiting a millisecond or two lets events share one;
- a request in flight: events pile up behind it and leave together when it returns;
  only if it is slow (the oldest waiting event is ``spill`` old, or a batch is full) does
  a further request start in parallel, up to ``concurrency``.

A tunnel can also be *held*: its events wait, in order, until it is released. A pod
holds a tunnel whose earlier events another pod has not delivered yet (a takeover or a
reconnect across pods), so that new events never overtake old ones.

The queue as a whole is bounded; when it is full the caller stops reading from that app's
sockets instead of dropping anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tunnel_broker.webhooks.events import EncodedEvent

OnDelivered = Callable[[], None]

# How far past the head a batch looks for events of tunnels that are not busy.
SCAN_FACTOR = 4


@dataclass(slots=True)
class Pending:
    event: EncodedEvent
    on_delivered: OnDelivered | None = None
    queued_at: float = 0.0


class EventBuffer:
    """Bounded per-app buffer of events not yet acknowledged by the webhook receiver."""

    def __init__(
        self,
        concurrency: int,
        max_events: int,
        max_bytes: int,
        batch_events: int,
        batch_bytes: int,
        linger: float = 0.0,
        spill: float = 0.005,
    ) -> None:
        self.concurrency = concurrency
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.spill = max(spill, linger)
        self.queue: deque[Pending] = deque()
        self.in_flight: dict[int, list[Pending]] = {}
        self.busy_tunnels: set[str] = set()
        self.held: set[str] = set()
        # Undelivered events per tunnel (queued or in flight).
        self.pending: dict[str, int] = {}
        self.events = 0
        self.bytes = 0
        self._next_batch = 0
        self._last_push = float("-inf")
        self._gap = float("inf")

    @property
    def has_room(self) -> bool:
        return self.events < self.max_events and self.bytes < self.max_bytes

    def is_empty(self) -> bool:
        return self.events == 0

    def push(self, pending: Pending) -> None:
        """Queue an event. Always accepted: callers check ``has_room`` first for events
        they can hold back (messages), never for those they cannot (closes)."""
        self._gap = pending.queued_at - self._last_push
        self._last_push = pending.queued_at
        self.queue.append(pending)
        self._count(pending)

    def push_older(self, older: list[Pending]) -> None:
        """Queue events that happened before everything queued (another pod's, handed
        over): they go first."""
        self.queue.extendleft(reversed(older))
        for pending in older:
            self._count(pending)

    def _count(self, pending: Pending) -> None:
        self.events += 1
        self.bytes += len(pending.event.body)
        tunnel_id = pending.event.tunnel_id
        self.pending[tunnel_id] = self.pending.get(tunnel_id, 0) + 1

    def _blocked(self) -> set[str]:
        held = self.held
        return self.busy_tunnels | held if held else self.busy_tunnels

    def _first_sendable(self) -> Pending | None:
        blocked = self._blocked()
        limit = self.batch_events * SCAN_FACTOR
        for index, pending in enumerate(self.queue):
            if index >= limit:
                return None
            if pending.event.tunnel_id not in blocked:
                return pending
        return None

    def wait_before_next(self, now: float) -> float | None:
        """Seconds until a batch should be taken (0: now), or None when no batch can be
        taken until something changes (a push or a completion)."""
        if len(self.in_flight) >= self.concurrency or not self.queue:
            return None
        first = self._first_sendable()
        if first is None:
            return None
        full = len(self.queue) >= self.batch_events
        if not self.in_flight:
            if full or not self.linger or self._gap >= self.linger:
                return 0.0
            return max(0.0, first.queued_at + self.linger - now)
        if full:
            return 0.0
        return max(0.0, first.queued_at + self.spill - now)

    def take_batch(self) -> tuple[int, list[Pending]]:
        """Move the next batch in flight: oldest sendable events first, within the count
        and byte bounds (a single larger event still goes, alone)."""
        batch: list[Pending] = []
        kept: deque[Pending] = deque()
        blocked = set(self._blocked())
        size = 0
        scanned = 0
        limit = self.batch_events * SCAN_FACTOR
        queue = self.queue
        while queue and len(batch) < self.batch_events and scanned < limit:
            pending = queue[0]
            tunnel_id = pending.event.tunnel_id
            if tunnel_id in blocked:
                kept.append(queue.popleft())
                scanned += 1
                continue
            length = len(pending.event.body)
            if batch and size + length > self.batch_bytes:
                break
            batch.append(queue.popleft())
            size += length
            scanned += 1
        if kept:
            queue.extendleft(reversed(kept))
        for pending in batch:
            self.busy_tunnels.add(pending.event.tunnel_id)
        batch_id = self._next_batch
        self._next_batch += 1
        self.in_flight[batch_id] = batch
        return batch_id, batch

    def complete(self, batch_id: int) -> list[str]:
        """A batch was acknowledged: forget it and free its tunnels. Returns the tunnels
        that have no undelivered event left."""
        batch = self.in_flight.pop(batch_id)
        counts = self.pending
        drained = []
        for pending in batch:
            tunnel_id = pending.event.tunnel_id
            self.busy_tunnels.discard(tunnel_id)
            left = counts[tunnel_id] - 1
            if left:
                counts[tunnel_id] = left
            else:
                del counts[tunnel_id]
                drained.append(tunnel_id)
        self.events -= len(batch)
        self.bytes -= sum(len(p.event.body) for p in batch)
        return drained

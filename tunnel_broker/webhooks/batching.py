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

Every event belongs to an *epoch*: the socket that caused it (or the pod's report on a
dead pod's behalf, or events adopted from a gone pod). An epoch can be *held*: its
events, and every later event of its tunnel, are parked aside in order (never blocking
the queue for other tunnels) until it is released. A pod holds the epoch of a socket
whose tunnel's earlier events another pod has not delivered yet (a takeover or a
reconnect across pods), so that new events never overtake old ones; counting
undelivered events per epoch tells a pod when it has delivered all of an old socket's.

The queue as a whole is bounded; when it is full the caller stops reading from that app's
sockets instead of dropping anything.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tunnel_broker.webhooks.events import EncodedEvent

OnDelivered = Callable[[], None]

_epochs = itertools.count(1)


def new_epoch() -> int:
    """A fresh epoch: one per socket, reaped tunnel or adoption, unique in the process."""
    return next(_epochs)


# How far past the head a batch looks for events of tunnels that are not busy.
SCAN_FACTOR = 4


@dataclass(slots=True)
class Pending:
    event: EncodedEvent
    on_delivered: OnDelivered | None = None
    queued_at: float = 0.0
    epoch: int = 0
    # False while an event store still has to write it (durable events: until it is
    # written or delivered, whichever comes first).
    stored: bool = True
    # Where the store keeps it: (entry id, size), for deleting it once delivered.
    entry: tuple[str, int] | None = None


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
        self.held: dict[int, str] = {}  # held epoch -> its tunnel
        # Events of tunnels with a held epoch, in order, out of the queue.
        self.parked: dict[str, deque[Pending]] = {}
        # Undelivered events per epoch (queued or in flight).
        self.pending: dict[int, int] = {}
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
        self._count(pending)
        parked = self.parked
        if parked or self.held:
            tunnel_id = pending.event.tunnel_id
            if tunnel_id in parked or pending.epoch in self.held:
                parked.setdefault(tunnel_id, deque()).append(pending)
                return
        self.queue.append(pending)

    def hold(self, epoch: int, tunnel_id: str) -> None:
        """Park the epoch's events (it has none yet) and its tunnel's after them."""
        self.held[epoch] = tunnel_id

    def release(self, epoch: int) -> None:
        """Queue the parked events of the epoch's tunnel up to the next held epoch."""
        tunnel_id = self.held.pop(epoch, None)
        if tunnel_id is None or tunnel_id not in self.parked:
            return
        parked = self.parked[tunnel_id]
        while parked and parked[0].epoch not in self.held:
            self.queue.append(parked.popleft())
        if not parked:
            del self.parked[tunnel_id]

    def take_all(self) -> list[Pending]:
        """Empty the buffer; everything not acknowledged, each tunnel's in order (in
        flight, queued, parked)."""
        left = self.undelivered()
        self.in_flight.clear()
        self.queue.clear()
        self.parked.clear()
        self.held.clear()
        self.busy_tunnels.clear()
        self.pending.clear()
        self.events = self.bytes = 0
        return left

    def push_adopted(self, adopted: list[Pending]) -> None:
        """Queue events another pod (or this process's previous run) left undelivered.

        They are older than every event of their tunnel parked here (a socket attached
        while their pod still owed them is held: ``backend/redis/order.py``), so they go
        before those; and newer than any queued, which are this pod's own from before the
        tunnel moved to theirs."""
        before_parked: dict[str, list[Pending]] = {}
        for pending in adopted:
            self._count(pending)
            tunnel_id = pending.event.tunnel_id
            if tunnel_id in self.parked:
                before_parked.setdefault(tunnel_id, []).append(pending)
            else:
                self.queue.append(pending)
        for tunnel_id, events in before_parked.items():
            self.parked[tunnel_id].extendleft(reversed(events))

    def undelivered(self) -> list[Pending]:
        """Everything not acknowledged, each tunnel's in order: in flight, queued, parked
        (what ``take_all`` returns, left in place)."""
        left = [p for _, batch in sorted(self.in_flight.items()) for p in batch]
        left += self.queue
        for parked in self.parked.values():
            left += parked
        return left

    def _count(self, pending: Pending) -> None:
        self.events += 1
        self.bytes += len(pending.event.body)
        epoch = pending.epoch
        self.pending[epoch] = self.pending.get(epoch, 0) + 1

    def _first_sendable(self) -> Pending | None:
        busy = self.busy_tunnels
        limit = self.batch_events * SCAN_FACTOR
        for index, pending in enumerate(self.queue):
            if index >= limit:
                return None
            if pending.event.tunnel_id not in busy:
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
        blocked = set(self.busy_tunnels)
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

    def complete(self, batch_id: int) -> list[int]:
        """A batch was acknowledged: forget it and free its tunnels. Returns the epochs
        that have no undelivered event left."""
        batch = self.in_flight.pop(batch_id)
        counts = self.pending
        drained = []
        for pending in batch:
            self.busy_tunnels.discard(pending.event.tunnel_id)
            epoch = pending.epoch
            left = counts[epoch] - 1
            if left:
                counts[epoch] = left
            else:
                del counts[epoch]
                drained.append(epoch)
        self.events -= len(batch)
        self.bytes -= sum(len(p.event.body) for p in batch)
        return drained

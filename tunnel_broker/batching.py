"""Which events go into the next webhook request: pure bookkeeping, no I/O.

Events of one app are spread over a few *lanes* by tunnel id. A lane has at most one
request in flight, so events of one tunnel are always delivered in order, while a slow
tunnel-heavy app still gets some parallelism. A lane sends as soon as it is idle
(no added latency) and, while a request is in flight, events pile up and leave together
in the next one (bounded by count and bytes). The buffer as a whole is bounded; when it
is full the caller stops reading from that app's sockets instead of dropping anything.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel_broker.events import EncodedEvent

OnDelivered = Callable[[], None]


@dataclass(slots=True)
class Pending:
    event: EncodedEvent
    on_delivered: OnDelivered | None = None


@dataclass(slots=True)
class Lane:
    queue: deque[Pending] = field(default_factory=deque)
    in_flight: list[Pending] | None = None


class EventBuffer:
    """Bounded per-app buffer of events not yet acknowledged by the webhook receiver."""

    def __init__(
        self, lanes: int, max_events: int, max_bytes: int, batch_events: int, batch_bytes: int
    ) -> None:
        self.lanes = [Lane() for _ in range(lanes)]
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.events = 0
        self.bytes = 0

    def lane_index(self, tunnel_id: str) -> int:
        # crc32, not hash(): stable across processes, so a tunnel's lane is predictable.
        return zlib.crc32(tunnel_id.encode()) % len(self.lanes)

    @property
    def has_room(self) -> bool:
        return self.events < self.max_events and self.bytes < self.max_bytes

    def push(self, pending: Pending) -> int:
        """Queue an event (always accepted: callers check ``has_room`` beforehand for
        events they can hold back) and return its lane."""
        index = self.lane_index(pending.event.tunnel_id)
        self.lanes[index].queue.append(pending)
        self.events += 1
        self.bytes += len(pending.event.body)
        return index

    def take_batch(self, index: int) -> list[Pending]:
        """Move the next batch of lane ``index`` in flight: at least one event, then as
        many as fit the count and byte bounds, oldest first."""
        lane = self.lanes[index]
        assert lane.in_flight is None, "a lane has one request in flight at most"
        batch: list[Pending] = []
        size = 0
        while lane.queue and len(batch) < self.batch_events:
            nxt = lane.queue[0]
            if batch and size + len(nxt.event.body) > self.batch_bytes:
                break
            batch.append(lane.queue.popleft())
            size += len(nxt.event.body)
        lane.in_flight = batch
        return batch

    def complete(self, index: int) -> list[Pending]:
        """The in-flight batch of lane ``index`` was acknowledged; forget it."""
        lane = self.lanes[index]
        batch = lane.in_flight or []
        lane.in_flight = None
        self.events -= len(batch)
        self.bytes -= sum(len(p.event.body) for p in batch)
        return batch

    def is_empty(self) -> bool:
        return self.events == 0

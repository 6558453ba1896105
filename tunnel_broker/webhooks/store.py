"""Where a backend keeps events until they are delivered, so that they outlive the
process that read them (durable events: ``backend/redis/journal.py``).

Event delivery tells the store of every event it queues and of every batch the business
server acknowledged; the store marks an event ``stored`` once it is written (only stored
events are sent: ``batching.py``) and tells the queue when writing is blocked (the store
is unreachable or full), which stops the app's sockets being read: back-pressure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tunnel_broker.webhooks.batching import Pending

if TYPE_CHECKING:
    from tunnel_broker.webhooks.delivery import AppEventQueue


class EventStore(Protocol):
    def added(self, queue: AppEventQueue, pending: Pending) -> bool:
        """A new event was queued: if the store keeps events as they come (True), write
        it soon, then mark it ``stored`` and call ``queue.stored()``."""

    def delivered(self, queue: AppEventQueue, batch: list[Pending]) -> None:
        """The business server acknowledged these: forget them."""

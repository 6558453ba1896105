"""Where a backend keeps events until they are delivered, so that they outlive the
process that read them (durable events: ``backend/redis/journal.py``).

Event delivery tells the store of every event it queues and of every batch the business
server acknowledged; the store writes what is not delivered soon (``stored`` marks an event
written, or delivered first and so never written), and tells the queue when it cannot
take more (unreachable or full), which stops the app's sockets being read: back-pressure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tunnel_broker.webhooks.batching import Pending

if TYPE_CHECKING:
    from tunnel_broker.webhooks.delivery import AppEventQueue


class EventStore(Protocol):
    def added(self, queue: AppEventQueue, pending: Pending) -> None:
        """A new event was queued: write it soon unless it is delivered first."""

    def delivered(self, queue: AppEventQueue, batch: list[Pending], at_once: bool = False) -> None:
        """The business server acknowledged these: forget them. ``at_once``: their
        receiver cannot tell a second delivery from a new event (legacy Wafer events carry
        no id), so forgetting them must not wait to go along with other writes."""

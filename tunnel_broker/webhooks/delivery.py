"""Event delivery: each app's events reach its webhook URL in order per tunnel, batched,
retried, and never silently dropped.

Per app there is one ``AppEventQueue``: an ``EventBuffer`` (``batching.py`` decides what
leaves when) and a dispatcher task that starts a request whenever the buffer says so, up
to the app's concurrency. Each request is a ``WebhookSender.send`` that retries the same
batch until the receiver answers 2xx; only then are the reply's actions carried out and
the batch's callbacks run (``tunnel.connected``'s approves its tunnel). When an app's
buffer is full, or its event store cannot keep up (``store.py``), ``full`` is set and
the readers of that app's sockets wait in ``wait_for_room``: back-pressure, not loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tunnel_broker.apps import App, AppRegistry
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.wafer.events import is_wafer_tunnel
from tunnel_broker.webhooks.batching import EventBuffer, OnDelivered, Pending, new_epoch
from tunnel_broker.webhooks.events import EncodedEvent
from tunnel_broker.webhooks.sender import WebhookSender
from tunnel_broker.webhooks.store import EventStore

logger = logging.getLogger("tunnel_broker.webhooks.delivery")

ActionHandler = Callable[[App, list[EncodedEvent], list[dict[str, Any]]], Awaitable[None]]


class AppEventQueue:
    """One app's buffer and the task that decides when its batches leave."""

    def __init__(self, delivery: EventDelivery, app: App) -> None:
        self.delivery = delivery
        self.app_id = app.id
        self.counters = delivery.usage.of(app.id)
        limits = app.limits
        self.buffer = EventBuffer(
            concurrency=limits.webhook_concurrency,
            max_events=limits.webhook_buffer_events,
            max_bytes=limits.webhook_buffer_bytes,
            batch_events=limits.webhook_batch_max_events,
            batch_bytes=limits.webhook_batch_max_bytes,
            linger=limits.webhook_linger_ms / 1000,
        )
        self.loop = asyncio.get_running_loop()
        self.store = delivery.store
        # ``full`` mirrors ``not room.is_set()`` as a plain attribute: socket readers check
        # it once per message. The buffer fills, or the store blocks (``block``).
        self.full = False
        self.blocked = False
        self._room = asyncio.Event()
        self._room.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self._wakeup = asyncio.Event()
        # Whether an emit can change the dispatcher's mind; most cannot (a linger timer or
        # a request in flight will wake it anyway), and waking it costs more than the
        # emit itself.
        self._wake_on_emit = True
        self._requests: set[asyncio.Task[None]] = set()
        # Callbacks for epochs whose last undelivered event someone waits for.
        self._drained: dict[int, list[Callable[[], None]]] = {}
        self._dispatcher = self.loop.create_task(self._dispatch(), name=f"webhooks:{app.id}")

    @property
    def depth(self) -> int:
        """Events buffered and not yet acknowledged."""
        return self.buffer.events

    def emit(
        self, event: EncodedEvent, on_delivered: OnDelivered | None = None, epoch: int = 0
    ) -> None:
        """Queue an event of ``epoch`` (``batching.py``); always accepted (see
        ``EventBuffer.push``)."""
        buffer = self.buffer
        tap = self.counters.tap
        if tap is not None:  # the live trace
            tap.event(self.app_id, event)
        pending = Pending(event, on_delivered, self.loop.time(), epoch)
        buffer.push(pending)
        self.idle.clear()
        if self.store is not None:
            self.store.added(self, pending)
        if self._wake_on_emit or len(buffer.queue) >= buffer.batch_events:
            self._wakeup.set()
        if not buffer.has_room:
            self.full = True
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def block(self, blocked: bool) -> None:
        """The store cannot take more (unreachable, or the app's stored backlog is at
        its limit) or can again."""
        self.blocked = blocked
        self._update_room()

    def _update_room(self) -> None:
        if self.blocked or not self.buffer.has_room:
            self.full = True
            self._room.clear()
        else:
            self.full = False
            self._room.set()

    @property
    def parked(self) -> int:
        """Events held back for the order across pods (``batching.py``)."""
        return sum(len(events) for events in self.buffer.parked.values())

    def pending_of(self, epoch: int) -> int:
        """The epoch's events not yet acknowledged."""
        return self.buffer.pending.get(epoch, 0)

    def when_delivered(self, epoch: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the epoch has no undelivered event (now if it has none)."""
        if epoch not in self.buffer.pending:
            callback()
        else:
            self._drained.setdefault(epoch, []).append(callback)

    def hold(self, epoch: int, tunnel_id: str) -> None:
        """Deliver nothing of the epoch, nor later of its tunnel, until ``release``."""
        self.buffer.hold(epoch, tunnel_id)

    def release(self, epoch: int) -> None:
        self.buffer.release(epoch)
        self._wakeup.set()

    def emit_adopted(self, adopted: list[Pending]) -> dict[str, int]:
        """Queue events a stopped or dead process left undelivered (``push_adopted``),
        stored already if they come from a store. Always accepted, like closes. Gives
        each tunnel's a fresh epoch; returns them."""
        if not adopted:
            return {}
        now = self.loop.time()
        epochs: dict[str, int] = {}
        for pending in adopted:
            tunnel_id = pending.event.tunnel_id
            if tunnel_id not in epochs:
                epochs[tunnel_id] = new_epoch()
            pending.epoch = epochs[tunnel_id]
            pending.queued_at = now
        self.buffer.push_adopted(adopted)
        self.idle.clear()
        self._wakeup.set()
        self._update_room()
        return epochs

    async def _dispatch(self) -> None:
        buffer = self.buffer
        wakeup = self._wakeup
        timer: asyncio.TimerHandle | None = None
        while True:
            wakeup.clear()
            delay = buffer.wait_before_next(self.loop.time())
            if delay == 0.0:
                batch_id, batch = buffer.take_batch()
                task = self.loop.create_task(self._send(batch_id, batch))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
                continue
            if delay is not None:
                timer = self.loop.call_later(delay, wakeup.set)
            self._wake_on_emit = delay is None and len(buffer.in_flight) < buffer.concurrency
            await wakeup.wait()
            if timer is not None:
                timer.cancel()
                timer = None

    async def _send(self, batch_id: int, batch: list[Pending]) -> None:
        events = [p.event for p in batch]
        delivery = self.delivery
        actions = await delivery.sender.send(self.app_id, events)
        app = delivery.apps.get(self.app_id)
        if actions and app is not None:
            try:
                await delivery.on_actions(app, events, actions)
            except Exception:
                logger.exception("app %s: carrying out webhook actions failed", self.app_id)
        drained = self.buffer.complete(batch_id)
        if self.store is not None:
            legacy = any(is_wafer_tunnel(p.event.tunnel_id) for p in batch)
            self.store.delivered(self, batch, at_once=legacy)
        for pending in batch:
            if pending.on_delivered is not None:
                pending.on_delivered()
        if self._drained:
            for epoch in drained:
                for callback in self._drained.pop(epoch, ()):
                    callback()
        if self.full:
            self._update_room()
        if self.buffer.is_empty():
            self.idle.set()
        self._wakeup.set()

    async def take_undelivered(self) -> list[Pending]:
        """Stop delivering and return every event not acknowledged, in an order that
        keeps each tunnel's (a request in flight may still have reached the receiver:
        whoever delivers these later may deliver some twice, with the same ids)."""
        await self.close()
        taken = self.buffer.take_all()
        self.idle.set()
        self.blocked = False
        self._update_room()  # readers still waiting go on (into a queue nobody delivers)
        return taken

    async def close(self) -> None:
        tasks = [self._dispatcher, *self._requests]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class EventDelivery:
    """Every app's event queue, created on an app's first event."""

    def __init__(
        self,
        apps: AppRegistry,
        sender: WebhookSender,
        on_actions: ActionHandler,
        usage: UsageCounters | None = None,
    ) -> None:
        self.apps = apps
        self.sender = sender
        self.on_actions = on_actions
        self.usage = usage or UsageCounters()  # whose ``tap`` sees every event emitted
        # Set by a backend that keeps events (``store.py``) before the first queue.
        self.store: EventStore | None = None
        self._queues: dict[str, AppEventQueue] = {}

    def queue(self, app: App) -> AppEventQueue:
        queue = self._queues.get(app.id)
        if queue is None:
            queue = self._queues[app.id] = AppEventQueue(self, app)
        return queue

    def emit(
        self,
        app: App,
        event: EncodedEvent,
        on_delivered: OnDelivered | None = None,
        epoch: int = 0,
    ) -> None:
        self.queue(app).emit(event, on_delivered, epoch)

    def queue_of(self, app_id: str) -> AppEventQueue | None:
        """The app's queue by id, made if needed; None for an app not (or no longer) known."""
        app = self.apps.get(app_id)
        return None if app is None else self.queue(app)

    def emit_adopted(self, app_id: str, adopted: list[Pending]) -> dict[str, int] | None:
        """``AppEventQueue.emit_adopted`` for an app known by id; None for an unknown app
        (deleted meanwhile), whose events are logged and dropped: nobody could take them."""
        queue = self.queue_of(app_id)
        if queue is None:
            logger.error("%d adopted events of unknown app %s dropped", len(adopted), app_id)
            return None
        logger.info("delivering %d events left undelivered of app %s", len(adopted), app_id)
        return queue.emit_adopted(adopted)

    def depths(self) -> dict[str, int]:
        return {app_id: q.depth for app_id, q in self._queues.items()}

    def queues(self) -> dict[str, AppEventQueue]:
        return dict(self._queues)

    async def flush(self, seconds: float) -> int:
        """Wait until every buffered event is delivered or ``seconds`` pass; return how
        many events are still undelivered."""
        queues = list(self._queues.values())
        waits = [asyncio.ensure_future(q.idle.wait()) for q in queues]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=seconds)
            for w in pending:
                w.cancel()
        return sum(q.depth for q in queues)

    async def take_undelivered(self) -> dict[str, list[Pending]]:
        """Stop delivering; every app's unacknowledged events (see the queue's method).
        Queues made afterwards start empty."""
        queues, self._queues = self._queues, {}
        taken = {app_id: await q.take_undelivered() for app_id, q in queues.items()}
        return {app_id: events for app_id, events in taken.items() if events}

    async def close(self) -> None:
        for queue in self._queues.values():
            if queue.depth:
                logger.error(
                    "app %s: %d webhook events could not be delivered before shutdown",
                    queue.app_id,
                    queue.depth,
                )
            await queue.close()
        self._queues.clear()
        await self.sender.close()

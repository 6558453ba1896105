"""An app's event queue: epochs counted, held, released and handed over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.support.waiting import check_for, settle, until
from tunnel_broker.apps import App, AppRegistry, parse_apps
from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.batching import Pending, new_epoch
from tunnel_broker.webhooks.delivery import AppEventQueue, EventDelivery
from tunnel_broker.webhooks.events import EncodedEvent
from tunnel_broker.webhooks.sender import WebhookSender

SECRET = "whsec_" + "a" * 40


def make_app() -> App:
    (app,) = parse_apps(
        [
            {
                "id": "a",
                "api_keys": ["tbk_a_0123456789abcdef"],
                "webhook_url": "http://127.0.0.1:9/hook",
                "webhook_secrets": [SECRET],
                # No lingering: a batch leaves as soon as nothing is in flight.
                "limits": {"webhook_linger_ms": 0},
            }
        ]
    )
    return app


def event(tunnel_id: str, text: str) -> EncodedEvent:
    fragment = events.tunnel_fragment("a", tunnel_id, "u", {}, {})
    return events.message(fragment, tunnel_id, text)


def text_of(event: EncodedEvent) -> str:
    data: str = json.loads(event.body)["data"]
    return data


@dataclass
class RecordingSender:
    """Records each batch as its request starts; with ``blocking`` a request is
    acknowledged only when the test says so (``ack``)."""

    blocking: bool = False
    batches: list[list[str]] = field(default_factory=list)
    acked: list[list[str]] = field(default_factory=list)
    gates: list[asyncio.Event] = field(default_factory=list)

    async def send(self, app_id: str, batch: list[EncodedEvent]) -> list[dict[str, Any]]:
        texts = [text_of(e) for e in batch]
        gate = asyncio.Event()
        if not self.blocking:
            gate.set()
        self.batches.append(texts)
        self.gates.append(gate)
        await gate.wait()
        self.acked.append(texts)
        return []

    def ack(self, index: int) -> None:
        self.gates[index].set()

    def sent(self) -> list[str]:
        return [text for batch in self.batches for text in batch]

    def delivered(self) -> list[str]:
        return [text for batch in self.acked for text in batch]

    async def close(self) -> None:
        for gate in self.gates:
            gate.set()


async def no_actions(app: App, batch: list[EncodedEvent], actions: list[dict[str, Any]]) -> None:
    raise AssertionError("the fake receiver asks for no actions")


@dataclass
class Setup:
    queue: AppEventQueue
    sender: RecordingSender


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    app = make_app()
    sender = RecordingSender()
    delivery = EventDelivery(AppRegistry([app]), cast(WebhookSender, sender), no_actions)
    yield Setup(delivery.queue(app), sender)
    await delivery.close()


async def test_an_epoch_counts_its_events_until_they_are_acknowledged(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    sender.blocking = True
    epoch = new_epoch()
    delivered: list[str] = []
    queue.emit(event("t1", "a"), lambda: delivered.append("a"), epoch)
    queue.emit(event("t2", "b"), lambda: delivered.append("b"), epoch)
    queue.emit(event("t2", "c"), None, 0)
    assert queue.pending_of(epoch) == 2
    assert queue.pending_of(0) == 1
    await until(lambda: len(sender.batches) == 1)
    await settle()
    assert sender.batches == [["a", "b", "c"]]
    assert queue.pending_of(epoch) == 2  # sent, not acknowledged
    assert delivered == []
    sender.ack(0)
    await until(lambda: queue.pending_of(epoch) == 0)
    assert delivered == ["a", "b"]
    assert queue.pending_of(0) == 0
    assert queue.depth == 0


async def test_when_delivered_calls_at_once_for_an_epoch_with_nothing_pending(
    setup: Setup,
) -> None:
    calls: list[int] = []
    setup.queue.when_delivered(new_epoch(), lambda: calls.append(1))
    assert calls == [1]


async def test_when_delivered_waits_for_the_epochs_last_event(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    sender.blocking = True
    epoch = new_epoch()
    calls: list[str] = []
    queue.emit(event("t1", "a"), None, epoch)
    await until(lambda: len(sender.batches) == 1)
    queue.emit(event("t1", "b"), None, epoch)  # its tunnel is busy: a second batch
    queue.when_delivered(epoch, lambda: calls.append("first"))
    queue.when_delivered(epoch, lambda: calls.append("second"))
    assert calls == []
    sender.ack(0)
    await until(lambda: len(sender.batches) == 2)
    await settle()
    assert queue.pending_of(epoch) == 1
    assert calls == []
    sender.ack(1)
    await until(lambda: bool(calls))
    await settle()
    assert calls == ["first", "second"]  # each once
    assert queue.pending_of(epoch) == 0
    queue.when_delivered(epoch, lambda: calls.append("after"))
    assert calls == ["first", "second", "after"]


async def test_when_delivered_ignores_other_epochs_draining(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    sender.blocking = True
    waited, other = new_epoch(), new_epoch()
    calls: list[int] = []
    queue.emit(event("t1", "a"), None, waited)
    await until(lambda: len(sender.batches) == 1)
    queue.emit(event("t2", "b"), None, other)
    queue.when_delivered(waited, lambda: calls.append(waited))
    queue.when_delivered(other, lambda: calls.append(other))
    # The first request is slow: after the spill delay (5 ms) a second goes in parallel.
    await check_for(2.0, lambda: len(sender.batches) == 2, interval=0.001)
    sender.ack(1)
    await until(lambda: calls == [other])
    await settle()
    assert calls == [other]
    sender.ack(0)
    await until(lambda: calls == [other, waited])


async def test_a_held_epoch_is_sent_only_once_released(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    held = new_epoch()
    queue.hold(held, "t1")
    queue.emit(event("t1", "h1"), None, held)
    queue.emit(event("t1", "h2"), None, held)
    queue.emit(event("t1", "later"), None, new_epoch())  # behind the held epoch
    queue.emit(event("t2", "free"), None, new_epoch())
    await until(lambda: sender.delivered() == ["free"])
    await settle()
    assert sender.sent() == ["free"]
    assert queue.pending_of(held) == 2
    assert queue.depth == 3
    assert queue.parked == 3
    assert not queue.idle.is_set()
    queue.release(held)
    assert queue.parked == 0
    await until(lambda: sender.delivered() == ["free", "h1", "h2", "later"])
    assert queue.pending_of(held) == 0
    assert queue.idle.is_set()


async def test_when_delivered_of_a_held_epoch_waits_for_its_release(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    held = new_epoch()
    calls: list[int] = []
    queue.hold(held, "t1")
    queue.emit(event("t1", "h1"), None, held)
    queue.when_delivered(held, lambda: calls.append(1))
    await settle()
    assert calls == []
    queue.release(held)
    await until(lambda: calls == [1])
    assert sender.delivered() == ["h1"]


async def test_emit_adopted_gives_each_tunnel_a_fresh_epoch(setup: Setup) -> None:
    queue, sender = setup.queue, setup.sender
    sender.blocking = True
    before = new_epoch()
    queue.emit(event("t1", "x"), None, before)
    await until(lambda: len(sender.batches) == 1)
    queue.emit(event("t2", "y"), None, before)
    queue.emit(event("t1", "z"), None, before)
    adopted = [Pending(event("t1", "o1")), Pending(event("t2", "o2")), Pending(event("t1", "o3"))]
    epochs = queue.emit_adopted(adopted)
    assert set(epochs) == {"t1", "t2"}
    assert epochs["t1"] != epochs["t2"]
    assert all(e > before for e in epochs.values())  # fresh epochs
    assert queue.pending_of(epochs["t1"]) == 2
    assert queue.pending_of(epochs["t2"]) == 1
    calls: list[str] = []
    queue.when_delivered(epochs["t1"], lambda: calls.append("t1"))
    sender.ack(0)
    await until(lambda: len(sender.batches) == 2)
    assert sender.batches[1] == ["y", "z", "o1", "o2", "o3"]
    assert calls == []
    sender.ack(1)
    await until(lambda: calls == ["t1"])
    assert queue.pending_of(epochs["t2"]) == 0


async def test_emit_adopted_of_nothing_leaves_the_queue_idle(setup: Setup) -> None:
    assert setup.queue.emit_adopted([]) == {}
    assert setup.queue.idle.is_set()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(setup.queue.idle.wait(), 0.5)
    assert asyncio.get_running_loop().time() - started < 0.1


async def test_take_undelivered_returns_in_flight_queued_and_parked_and_stops(
    setup: Setup,
) -> None:
    queue, sender = setup.queue, setup.sender
    sender.blocking = True
    delivered: list[str] = []
    queue.emit(event("t1", "a"), lambda: delivered.append("a"), new_epoch())
    await until(lambda: len(sender.batches) == 1)
    queue.emit(event("t1", "b"), None, new_epoch())  # queued: its tunnel is busy
    held = new_epoch()
    queue.hold(held, "t3")
    queue.emit(event("t3", "c"), None, held)  # parked
    queue.emit(event("t2", "d"), None, new_epoch())  # queued
    taken = await queue.take_undelivered()
    assert [text_of(p.event) for p in taken] == ["a", "b", "d", "c"]
    assert queue.depth == 0
    assert queue.parked == 0
    assert queue.pending_of(held) == 0
    assert queue.idle.is_set()
    # Delivery stopped: the request in flight is abandoned, nothing more is sent.
    sender.blocking = False
    for gate in sender.gates:
        gate.set()
    queue.release(held)
    await settle()
    assert sender.batches == [["a"]]
    assert sender.acked == []
    assert delivered == []

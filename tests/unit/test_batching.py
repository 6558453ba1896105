from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.batching import EventBuffer, Pending, new_epoch


def make(tunnel: str, text: str, at: float = 0.0, epoch: int = 0) -> Pending:
    return Pending(events.message(b'"app_id":"a"', tunnel, text), None, at, epoch)


def text_of(pending: Pending) -> str:
    data: str = json.loads(pending.event.body)["data"]
    return data


def texts(pendings: Iterable[Pending]) -> list[str]:
    return [text_of(p) for p in pendings]


def buffer(**kw: Any) -> EventBuffer:
    options: dict[str, Any] = {
        "concurrency": 4,
        "max_events": 10_000,
        "max_bytes": 10**9,
        "batch_events": 10,
        "batch_bytes": 10**6,
    }
    options.update(kw)
    return EventBuffer(**options)


@given(
    stream=st.lists(
        st.tuples(st.sampled_from(["t1", "t2", "t3", "t4", "t5"]), st.text(max_size=50)),
        max_size=200,
    ),
    concurrency=st.integers(1, 4),
    batch_events=st.integers(1, 20),
    batch_bytes=st.integers(1024, 4096),
    completions=st.lists(st.integers(0, 3), max_size=400),
)
def test_any_interleaving_keeps_per_tunnel_order_and_bounds(
    stream: list[tuple[str, str]],
    concurrency: int,
    batch_events: int,
    batch_bytes: int,
    completions: list[int],
) -> None:
    buf = buffer(concurrency=concurrency, batch_events=batch_events, batch_bytes=batch_bytes)
    for tunnel, text in stream:
        buf.push(make(tunnel, text))
    delivered: dict[str, list[str]] = {}
    choices = iter(completions)
    for _ in range(10_000):
        if buf.is_empty():
            break
        while buf.wait_before_next(now=1e9) == 0.0:
            _, batch = buf.take_batch()
            assert 1 <= len(batch) <= batch_events
            if len(batch) > 1:
                assert sum(len(p.event.body) for p in batch) <= batch_bytes
            tunnels = [p.event.tunnel_id for p in batch]
            # A tunnel is never in two batches in flight at once.
            in_other = {p.event.tunnel_id for b in list(buf.in_flight.values())[:-1] for p in b}
            assert not in_other & set(tunnels)
        assert buf.in_flight, "events are queued but nothing can be sent"
        keys = sorted(buf.in_flight)
        batch_id = keys[next(choices, 0) % len(keys)]
        done = buf.in_flight[batch_id]
        buf.complete(batch_id)
        for pending in done:
            delivered.setdefault(pending.event.tunnel_id, []).append(
                json.loads(pending.event.body)["data"]
            )
    expected: dict[str, list[str]] = {}
    for tunnel, text in stream:
        expected.setdefault(tunnel, []).append(text)
    assert delivered == expected
    assert buf.bytes == 0 and buf.events == 0


def test_idle_app_sends_at_once_and_steady_traffic_lingers() -> None:
    buf = buffer(linger=0.002)
    buf.push(make("t1", "a", at=10.0))
    assert buf.wait_before_next(now=10.0) == 0.0  # sparse: first event in a long while
    buf.take_batch()
    buf.complete(0)
    buf.push(make("t2", "b", at=10.0005))  # 0.5 ms after the previous event: steady
    wait = buf.wait_before_next(now=10.0005)
    assert wait == pytest.approx(0.002)


def test_events_coalesce_behind_a_request_in_flight_and_spill_when_it_is_slow() -> None:
    buf = buffer(linger=0.0, spill=0.005)
    buf.push(make("t1", "a", at=0.0))
    buf.take_batch()
    for i in range(5):
        buf.push(make(f"u{i}", "x", at=0.001))
    assert buf.wait_before_next(now=0.002) == pytest.approx(0.004)  # wait for the request in flight
    assert buf.wait_before_next(now=0.006) == 0.0  # it is slow: a second request goes
    _, second = buf.take_batch()
    assert len(second) == 5


def test_a_busy_tunnel_waits_but_others_go() -> None:
    buf = buffer()
    buf.push(make("t1", "1"))
    buf.take_batch()
    buf.push(make("t1", "2"))
    assert buf.wait_before_next(now=100.0) is None  # only t1 queued, and t1 is busy
    buf.push(make("t2", "x"))
    assert buf.wait_before_next(now=100.0) == 0.0
    _, batch = buf.take_batch()
    assert [p.event.tunnel_id for p in batch] == ["t2"]
    assert [p.event.tunnel_id for p in buf.queue] == ["t1"]


def test_room_is_bounded_by_events_and_bytes() -> None:
    buf = buffer(max_events=3)
    for _ in range(3):
        assert buf.has_room
        buf.push(make("t", "x"))
    assert not buf.has_room
    by_bytes = buffer(max_bytes=100)
    by_bytes.push(make("t", "x" * 200))
    assert not by_bytes.has_room


def test_a_single_event_larger_than_the_batch_bound_still_leaves() -> None:
    buf = buffer(batch_bytes=1024)
    buf.push(make("t", "x" * 5000))
    assert len(buf.take_batch()[1]) == 1


# ---- epochs: holds park a socket's events aside ------------------------------------------


def size_of(pendings: Iterable[Pending]) -> int:
    return sum(len(p.event.body) for p in pendings)


def test_new_epochs_are_distinct_and_never_the_default() -> None:
    made = [new_epoch() for _ in range(100)]
    assert len(set(made)) == 100
    assert 0 not in made
    assert made == sorted(made)


def test_a_held_epoch_is_parked_while_other_tunnels_flow() -> None:
    buf = buffer()
    epoch = new_epoch()
    buf.hold(epoch, "t1")
    held = [make("t1", "h1", epoch=epoch), make("t1", "h2", epoch=epoch)]
    other = make("t2", "o1")
    for pending in [*held, other]:
        buf.push(pending)
    assert texts(buf.parked["t1"]) == ["h1", "h2"]
    assert texts(buf.queue) == ["o1"]
    # Parked events count towards the bounds and the epoch's undelivered events.
    assert buf.events == 3
    assert buf.bytes == size_of([*held, other])
    assert buf.pending == {epoch: 2, 0: 1}
    assert buf.wait_before_next(now=100.0) == 0.0
    batch_id, batch = buf.take_batch()
    assert texts(batch) == ["o1"]
    assert buf.complete(batch_id) == [0]
    assert buf.wait_before_next(now=100.0) is None  # only parked events left
    assert buf.events == 2
    assert buf.bytes == size_of(held)
    assert buf.pending == {epoch: 2}


def test_a_hold_leaves_the_tunnels_earlier_queued_events_alone() -> None:
    buf = buffer()
    old, new = new_epoch(), new_epoch()
    buf.push(make("t1", "old1", epoch=old))
    buf.hold(new, "t1")
    buf.push(make("t1", "new1", epoch=new))
    assert texts(buf.queue) == ["old1"]
    assert texts(buf.parked["t1"]) == ["new1"]
    _, batch = buf.take_batch()
    assert texts(batch) == ["old1"]


def test_later_events_of_a_tunnel_park_behind_its_held_epoch_whatever_their_epoch() -> None:
    buf = buffer()
    held, later, older = new_epoch(), new_epoch(), new_epoch()
    buf.hold(held, "t1")
    buf.push(make("t1", "h1", epoch=held))
    buf.push(make("t1", "l1", epoch=later))  # a later socket, not held itself
    buf.push(make("t1", "o1", epoch=older))  # an old socket's late close
    buf.push(make("t1", "z1"))
    assert list(buf.queue) == []
    assert texts(buf.parked["t1"]) == ["h1", "l1", "o1", "z1"]
    assert buf.pending == {held: 1, later: 1, older: 1, 0: 1}
    buf.release(held)
    assert texts(buf.queue) == ["h1", "l1", "o1", "z1"]
    assert buf.parked == {}
    assert buf.held == {}


def test_events_of_a_held_epoch_park_even_before_others_of_the_tunnel_do() -> None:
    buf = buffer()
    held = new_epoch()
    buf.hold(held, "t1")
    buf.push(make("t1", "before"))  # not held, nothing parked yet: queued
    buf.push(make("t1", "h1", epoch=held))
    buf.push(make("t1", "after"))
    assert texts(buf.queue) == ["before"]
    assert texts(buf.parked["t1"]) == ["h1", "after"]


@pytest.mark.parametrize("first_released", ["earlier", "later"])
def test_two_held_epochs_of_one_tunnel_released_in_either_order(first_released: str) -> None:
    buf = buffer()
    earlier, later = new_epoch(), new_epoch()
    buf.hold(earlier, "t1")
    buf.push(make("t1", "e1", epoch=earlier))
    buf.hold(later, "t1")
    buf.push(make("t1", "l1", epoch=later))
    buf.push(make("t1", "e2", epoch=earlier))  # behind l1 now
    buf.push(make("t1", "x1"))
    if first_released == "later":
        buf.release(later)
        # The earlier epoch still holds the head: nothing moves.
        assert list(buf.queue) == []
        assert texts(buf.parked["t1"]) == ["e1", "l1", "e2", "x1"]
        buf.release(earlier)
    else:
        buf.release(earlier)
        # Up to the next still-held epoch only.
        assert texts(buf.queue) == ["e1"]
        assert texts(buf.parked["t1"]) == ["l1", "e2", "x1"]
        buf.release(later)
    assert texts(buf.queue) == ["e1", "l1", "e2", "x1"]
    assert buf.parked == {}
    assert buf.held == {}


def test_released_events_join_the_end_of_the_queue() -> None:
    buf = buffer()
    held = new_epoch()
    buf.hold(held, "t1")
    buf.push(make("t1", "h1", epoch=held))
    buf.push(make("t2", "a"))
    buf.release(held)
    buf.push(make("t3", "b"))
    assert texts(buf.queue) == ["a", "h1", "b"]


def test_releasing_an_epoch_that_never_had_events_lets_its_later_events_through() -> None:
    buf = buffer()
    held = new_epoch()
    buf.hold(held, "t1")
    buf.release(held)
    buf.push(make("t1", "h1", epoch=held))
    assert texts(buf.queue) == ["h1"]
    assert buf.parked == {}
    buf.release(held)  # again, and an epoch never held: no effect
    buf.release(new_epoch())
    assert texts(buf.queue) == ["h1"]


def test_thousands_of_parked_events_block_no_other_tunnel() -> None:
    buf = buffer(batch_events=10)
    held = new_epoch()
    buf.hold(held, "t1")
    for i in range(5000):
        buf.push(make("t1", f"h{i}", epoch=held))
    buf.push(make("t2", "free"))
    assert buf.wait_before_next(now=100.0) == 0.0
    batch_id, batch = buf.take_batch()
    assert texts(batch) == ["free"]
    buf.complete(batch_id)
    assert buf.events == 5000
    assert buf.pending == {held: 5000}
    buf.release(held)
    delivered: list[str] = []
    while buf.wait_before_next(now=100.0) == 0.0:
        batch_id, batch = buf.take_batch()
        delivered += texts(batch)
        buf.complete(batch_id)
    assert delivered == [f"h{i}" for i in range(5000)]
    assert buf.events == buf.bytes == 0
    assert buf.pending == {}


def test_complete_returns_the_epochs_left_with_nothing_undelivered() -> None:
    buf = buffer(batch_events=2)
    first, second = new_epoch(), new_epoch()
    buf.push(make("t1", "a", epoch=first))
    buf.push(make("t2", "b", epoch=second))
    buf.push(make("t1", "c", epoch=first))
    one, batch = buf.take_batch()
    assert texts(batch) == ["a", "b"]
    assert buf.pending == {first: 2, second: 1}
    assert buf.complete(one) == [second]  # "c" of the first epoch is still queued
    assert buf.pending == {first: 1}
    two, batch = buf.take_batch()
    assert texts(batch) == ["c"]
    assert buf.complete(two) == [first]
    assert buf.pending == {}


def test_an_epoch_drained_twice_is_reported_twice() -> None:
    buf = buffer()
    epoch = new_epoch()
    buf.push(make("t1", "a", epoch=epoch))
    batch_id, _ = buf.take_batch()
    assert buf.complete(batch_id) == [epoch]
    buf.push(make("t1", "b", epoch=epoch))
    assert buf.pending == {epoch: 1}
    batch_id, _ = buf.take_batch()
    assert buf.complete(batch_id) == [epoch]


def test_adopted_events_go_after_those_queued_and_are_counted() -> None:
    # Queued events of the same tunnel are this pod's own from before the tunnel moved
    # to the pod whose events are adopted: older.
    buf = buffer()
    buf.push(make("t1", "own1"))
    buf.push(make("t2", "own2"))
    adopted_epoch = new_epoch()
    adopted = [
        make("t1", "adopted1", epoch=adopted_epoch),
        make("t3", "adopted2", epoch=adopted_epoch),
    ]
    buf.push_adopted(adopted)
    assert texts(buf.queue) == ["own1", "own2", "adopted1", "adopted2"]
    assert buf.events == 4
    assert buf.bytes == size_of(buf.queue)
    assert buf.pending == {0: 2, adopted_epoch: 2}
    batch_id, batch = buf.take_batch()
    assert texts(batch) == ["own1", "own2", "adopted1", "adopted2"]
    assert sorted(buf.complete(batch_id)) == [0, adopted_epoch]


def test_adopted_events_go_before_those_parked_of_their_tunnel() -> None:
    # A socket attached while the adopted events' pod owed them is held: its events are
    # newer.
    buf = buffer()
    held = new_epoch()
    buf.hold(held, "t1")
    buf.push(make("t1", "h1", epoch=held))
    buf.push_adopted([make("t1", "old", epoch=new_epoch()), make("t2", "other", epoch=new_epoch())])
    assert texts(buf.parked["t1"]) == ["old", "h1"]
    _, batch = buf.take_batch()
    assert texts(batch) == ["other"]
    buf.release(held)
    assert texts(buf.queue) == ["old", "h1"]
    assert "t1" not in buf.parked


def test_undelivered_lists_everything_in_order_and_keeps_it() -> None:
    buf = buffer()
    held = new_epoch()
    buf.push(make("t1", "a"))
    buf.take_batch()
    buf.push(make("t2", "b"))
    buf.hold(held, "t3")
    buf.push(make("t3", "c", epoch=held))
    assert texts(buf.undelivered()) == ["a", "b", "c"]
    assert buf.events == 3


def test_take_all_returns_in_flight_then_queued_then_parked_and_resets() -> None:
    buf = buffer()
    held_t3, held_t1 = new_epoch(), new_epoch()
    buf.push(make("t1", "a"))
    first, _ = buf.take_batch()  # [a]
    buf.push(make("t2", "b"))
    buf.push(make("t1", "c"))
    second, batch = buf.take_batch()  # t1 is busy: [b]
    assert texts(batch) == ["b"]
    assert (first, second) == (0, 1)
    buf.push(make("t4", "d"))
    buf.hold(held_t3, "t3")
    buf.push(make("t3", "e", epoch=held_t3))
    buf.hold(held_t1, "t1")
    buf.push(make("t1", "f", epoch=held_t1))
    buf.push(make("t3", "g"))
    assert texts(buf.queue) == ["c", "d"]
    left = buf.take_all()
    assert texts(left) == ["a", "b", "c", "d", "e", "g", "f"]
    assert buf.events == buf.bytes == 0
    assert buf.pending == {}
    assert not buf.queue and not buf.in_flight and not buf.parked and not buf.held
    assert buf.is_empty() and buf.has_room
    assert buf.take_all() == []
    # Nothing is busy or held any more: the buffer works as new.
    buf.push(make("t1", "h", epoch=held_t1))
    assert buf.wait_before_next(now=100.0) == 0.0
    batch_id, batch = buf.take_batch()
    assert texts(batch) == ["h"]
    assert buf.complete(batch_id) == [held_t1]


def test_take_all_keeps_in_flight_batches_in_batch_order() -> None:
    buf = buffer(batch_events=1)
    for name in ["t1", "t2", "t3"]:
        buf.push(make(name, name))
    for _ in range(3):
        buf.take_batch()
    assert texts(buf.take_all()) == ["t1", "t2", "t3"]


# One step of a random run: (operation, tunnel, number).
Step = tuple[str, str, int]

TUNNELS = ["t1", "t2"]
# push an event of the tunnel's current socket (0), or of one of its earlier ones
push = st.tuples(st.just("push"), st.sampled_from(TUNNELS), st.integers(0, 2))
# a new socket (epoch) for the tunnel, held (1) or not (0)
socket = st.tuples(st.just("socket"), st.sampled_from(TUNNELS), st.integers(0, 1))
release = st.tuples(st.just("release"), st.just(""), st.integers(0, 20))
send = st.tuples(st.just("send"), st.just(""), st.just(0))
complete = st.tuples(st.just("complete"), st.just(""), st.integers(0, 20))
# Pushes most often, releases least: holds live long enough for events to pile up.
steps = st.one_of(push, push, push, push, socket, socket, release, send, send, complete, complete)


@given(
    run=st.lists(steps, min_size=30, max_size=200),
    concurrency=st.integers(1, 3),
    batch_events=st.integers(1, 6),
    finish=st.randoms(use_true_random=False),
)
def test_random_holds_and_releases_keep_order_and_deliver_everything_once(
    run: list[Step], concurrency: int, batch_events: int, finish: random.Random
) -> None:
    buf = buffer(concurrency=concurrency, batch_events=batch_events)
    sockets = {t: [new_epoch()] for t in TUNNELS}
    held: dict[int, str] = {}
    pushed: dict[str, list[str]] = {}
    delivered: dict[str, list[str]] = {}
    undelivered: dict[str, Pending] = {}  # by text
    counter = 0

    def expected_pending() -> dict[int, int]:
        counts: dict[int, int] = {}
        for pending in undelivered.values():
            counts[pending.epoch] = counts.get(pending.epoch, 0) + 1
        return counts

    def send() -> None:
        while buf.wait_before_next(now=1e9) == 0.0:
            _, batch = buf.take_batch()
            assert batch
            for pending in batch:
                assert pending.epoch not in held, "an event of a held epoch was sent"

    def complete(choice: int) -> None:
        keys = sorted(buf.in_flight)
        batch_id = keys[choice % len(keys)]
        batch = buf.in_flight[batch_id]
        before = expected_pending()
        for pending in batch:
            delivered.setdefault(pending.event.tunnel_id, []).append(text_of(pending))
            del undelivered[text_of(pending)]
        after = expected_pending()
        drained = buf.complete(batch_id)
        assert len(drained) == len(set(drained))
        assert set(drained) == {e for e in before if e not in after}

    for op, tunnel, number in run:
        if op == "push":
            epochs = sockets[tunnel]
            epoch = epochs[max(0, len(epochs) - 1 - number)]
            counter += 1
            text = f"{tunnel}:{counter}"
            pending = make(tunnel, text, epoch=epoch)
            buf.push(pending)
            pushed.setdefault(tunnel, []).append(text)
            undelivered[text] = pending
        elif op == "socket":
            epoch = new_epoch()
            sockets[tunnel].append(epoch)
            if number:
                buf.hold(epoch, tunnel)
                held[epoch] = tunnel
        elif op == "release" and held:
            epoch = sorted(held)[number % len(held)]
            del held[epoch]
            buf.release(epoch)
        elif op == "send":
            send()
            # Whatever is queued can go: with nothing in flight, something was sent.
            assert buf.in_flight or not buf.queue
        elif op == "complete" and buf.in_flight:
            complete(number)
        # Parked events only ever wait behind an epoch still held.
        for parked in buf.parked.values():
            assert parked and parked[0].epoch in held
        assert all(p.epoch not in held for p in buf.queue)
        assert buf.events == len(undelivered)
        assert buf.bytes == size_of(undelivered.values())
        assert buf.pending == expected_pending()

    for epoch in finish.sample(sorted(held), len(held)):
        del held[epoch]
        buf.release(epoch)
    assert buf.parked == {}
    for _ in range(10_000):
        if buf.is_empty():
            break
        send()
        assert buf.in_flight, "events are queued but nothing can be sent"
        complete(finish.randrange(len(buf.in_flight)))
    assert delivered == pushed
    assert buf.events == buf.bytes == 0
    assert buf.pending == {}
    assert not buf.queue and not buf.in_flight and not buf.busy_tunnels

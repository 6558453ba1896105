from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.batching import EventBuffer, Pending


def make(tunnel: str, text: str, at: float = 0.0) -> Pending:
    return Pending(events.message(b'"app_id":"a"', tunnel, text), None, at)


def buffer(**kw: float) -> EventBuffer:
    options = {
        "concurrency": 4,
        "max_events": 10_000,
        "max_bytes": 10**9,
        "batch_events": 10,
        "batch_bytes": 10**6,
    }
    options.update(kw)
    return EventBuffer(**options)  # type: ignore[arg-type]


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

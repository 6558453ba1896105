from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker import events
from tunnel_broker.batching import EventBuffer, Pending


def make(tunnel: str, text: str) -> Pending:
    return Pending(events.message(b'"app_id":"a"', tunnel, text))


@given(
    stream=st.lists(
        st.tuples(st.sampled_from(["t1", "t2", "t3", "t4", "t5"]), st.text(max_size=50)),
        max_size=200,
    ),
    lanes=st.integers(1, 4),
    batch_events=st.integers(1, 20),
    batch_bytes=st.integers(1024, 4096),
)
def test_batches_keep_per_tunnel_order_and_bounds(
    stream: list[tuple[str, str]], lanes: int, batch_events: int, batch_bytes: int
) -> None:
    buffer = EventBuffer(lanes, 10_000, 10**9, batch_events, batch_bytes)
    for tunnel, text in stream:
        buffer.push(make(tunnel, text))
    delivered: dict[str, list[bytes]] = {}
    for index in range(lanes):
        while buffer.lanes[index].queue:
            batch = buffer.take_batch(index)
            assert 1 <= len(batch) <= batch_events
            if len(batch) > 1:
                assert sum(len(p.event.body) for p in batch) <= batch_bytes
            for p in buffer.complete(index):
                delivered.setdefault(p.event.tunnel_id, []).append(p.event.body)
    expected: dict[str, list[bytes]] = {}
    for tunnel, text in stream:
        expected.setdefault(tunnel, []).append(text)
    assert set(delivered) == set(expected)
    for tunnel, bodies in delivered.items():
        assert [json.loads(b)["data"] for b in bodies] == expected[tunnel]
    assert buffer.is_empty() and buffer.bytes == 0


def test_one_tunnel_always_maps_to_one_lane() -> None:
    buffer = EventBuffer(4, 100, 10**6, 10, 10**6)
    assert len({buffer.lane_index("tun_same") for _ in range(10)}) == 1


def test_room_is_bounded_by_events_and_bytes() -> None:
    buffer = EventBuffer(1, 3, 10**6, 10, 10**6)
    for _ in range(3):
        assert buffer.has_room
        buffer.push(make("t", "x"))
    assert not buffer.has_room
    by_bytes = EventBuffer(1, 1000, 100, 10, 10**6)
    by_bytes.push(make("t", "x" * 200))
    assert not by_bytes.has_room


def test_a_single_event_larger_than_the_batch_bound_still_leaves() -> None:
    buffer = EventBuffer(1, 10, 10**6, 10, 1024)
    buffer.push(make("t", "x" * 5000))
    assert len(buffer.take_batch(0)) == 1

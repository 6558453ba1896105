"""The meter over stores that fail on purpose, and clocks the test moves."""

from __future__ import annotations

import asyncio
import calendar

from tunnel_broker.usage.buckets import HOUR, Bucket, add_into
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.meter import Meter
from tunnel_broker.usage.store import Batch, MemoryUsageStore

NOON = calendar.timegm((2026, 12, 2, 12, 0, 0))


class Clocks:
    """Wall and monotonic time, moved together by the test."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class TokenStore:
    """What Redis does (``redis_store.py``): applies a token once. ``fail`` makes the next
    adds raise before applying; ``lose_answer`` makes them apply, then raise."""

    writes_peak = False

    def __init__(self) -> None:
        self.kept: dict[tuple[str, int], Bucket] = {}
        self.applied: set[str] = set()
        self.fail = False
        self.lose_answer = False
        self.calls = 0

    async def add(self, batch: Batch) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("redis is down")
        if batch.token not in self.applied:
            self.applied.add(batch.token)
            for key, bucket in batch.buckets.items():
                add_into(self.kept.setdefault(key, {}), bucket)
        if self.lose_answer:
            raise TimeoutError("the answer was lost")

    def total(self, name: str) -> int:
        return sum(b.get(name, 0) for b in self.kept.values())


def meter_on(store: object, clocks: Clocks, counters: UsageCounters) -> Meter:
    return Meter(
        counters,
        store,  # type: ignore[arg-type]
        flush_seconds=1.0,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )


async def test_each_flush_adds_what_was_counted_since_the_last() -> None:
    clocks, counters = Clocks(NOON + 60), UsageCounters()
    store = MemoryUsageStore(35, clock=lambda: clocks.wall)
    meter = meter_on(store, clocks, counters)
    demo = counters.of("demo")
    demo.messages_in += 3
    demo.bytes_in += 300
    assert await meter.flush()
    demo.messages_in += 2
    counters.of("other").api_calls += 1
    assert await meter.flush()
    assert await meter.flush()  # nothing new: nothing written, nothing doubled
    found = await store.buckets("demo", NOON, NOON + HOUR)
    assert found == {NOON: {"messages_in": 5, "bytes_in": 300}}
    assert await store.buckets("other", NOON, NOON + HOUR) == {NOON: {"api_calls": 1}}


async def test_a_failed_flush_is_sent_again_and_nothing_is_lost_or_doubled() -> None:
    clocks, counters, store = Clocks(NOON + 60), UsageCounters(), TokenStore()
    meter = meter_on(store, clocks, counters)
    demo = counters.of("demo")
    demo.messages_in += 1
    assert await meter.flush()
    store.fail = True
    demo.messages_in += 10
    assert not await meter.flush()
    demo.messages_in += 100
    assert not await meter.flush()
    assert meter.in_flight is not None and meter.in_flight.buckets[("demo", NOON)] == {
        "messages_in": 10
    }
    store.fail = False
    store.lose_answer = True  # applied, but the meter cannot know
    demo.messages_in += 1000
    assert not await meter.flush()
    assert store.total("messages_in") == 11
    store.lose_answer = False
    assert not await meter.flush()  # the same batch again: not applied twice
    assert store.total("messages_in") == 11
    assert await meter.flush()  # then what waited meanwhile
    assert store.total("messages_in") == 1111
    assert meter.failures == 3


async def test_counts_go_to_the_hour_they_are_flushed_in_and_tunnel_time_is_split() -> None:
    clocks, counters = Clocks(NOON - 30), UsageCounters()
    store = MemoryUsageStore(35, clock=lambda: clocks.wall)
    meter = meter_on(store, clocks, counters)
    demo = counters.of("demo")
    demo.tunnel_opened(clocks.mono)
    demo.tunnel_opened(clocks.mono)
    assert await meter.flush()  # at 11:59:30, two tunnels open from now on
    clocks.advance(60)  # to 12:00:30: 30 s in each hour, two tunnels
    demo.messages_in += 4
    assert await meter.flush()
    before = await store.buckets("demo", NOON - HOUR, NOON)
    after = await store.buckets("demo", NOON, NOON + HOUR)
    assert before[NOON - HOUR]["tunnel_ms"] == 60_000
    assert after[NOON]["tunnel_ms"] == 60_000
    assert after[NOON]["messages_in"] == 4 and "messages_in" not in before[NOON - HOUR]
    assert before[NOON - HOUR]["tunnels_opened"] == 2  # flushed at 11:59:30
    # the peak belongs to both hours the span touched
    assert before[NOON - HOUR]["peak_tunnels"] == after[NOON]["peak_tunnels"] == 2


async def test_a_store_that_keeps_the_peak_itself_gets_none() -> None:
    clocks, counters, store = Clocks(NOON + 60), UsageCounters(), TokenStore()
    meter = meter_on(store, clocks, counters)
    counters.of("demo").tunnel_opened(clocks.mono)
    clocks.advance(2)
    assert await meter.flush()
    assert store.total("peak_tunnels") == 0
    assert store.total("tunnel_ms") == 2000
    assert counters.of("demo").peak_tunnels == 1  # left for whoever takes it


async def test_stop_writes_the_last_counts() -> None:
    counters = UsageCounters()
    store = MemoryUsageStore(35)
    meter = Meter(counters, store, flush_seconds=3600)
    meter.start()
    counters.of("demo").logins += 2
    await asyncio.sleep(0)
    await meter.stop()
    found = await store.buckets("demo", 0, 10**10)
    assert [b["logins"] for b in found.values()] == [2]
    await meter.stop()  # twice is harmless


async def test_the_meter_flushes_on_its_own() -> None:
    counters = UsageCounters()
    store = MemoryUsageStore(35)
    meter = Meter(counters, store, flush_seconds=0.02)
    meter.start()
    try:
        counters.of("demo").api_calls += 7
        for _ in range(200):
            await asyncio.sleep(0.01)
            if await store.buckets("demo", 0, 10**10):
                break
        found = await store.buckets("demo", 0, 10**10)
        assert [b["api_calls"] for b in found.values()] == [7]
    finally:
        await meter.stop()

"""Usage buckets and recent deliveries in a real redis-server, reached through a proxy
that can cut the link: a Redis outage during a flush loses nothing and doubles nothing."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import check_for
from tunnel_broker.backend.redis import keys
from tunnel_broker.usage.buckets import HOUR, hour_label, hour_of
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.meter import Meter
from tunnel_broker.usage.redis_deliveries import RedisDeliveryLog
from tunnel_broker.usage.redis_store import RedisUsageStore
from tunnel_broker.usage.store import Batch

NOON = calendar.timegm((2026, 12, 2, 12, 0, 0))


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
async def direct(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def client_of(url: str) -> Any:
    # A short reply timeout: a cut link fails the flush quickly.
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_timeout=0.5, socket_connect_timeout=0.5
    )


async def bucket(direct: Any, app_id: str, hour: int) -> dict[str, int]:
    raw = await direct.hgetall(keys.usage(app_id, hour_label(hour)))
    return {k: int(v) for k, v in raw.items()}


async def test_a_batch_is_added_once_whatever_the_retries(direct: Any) -> None:
    store = RedisUsageStore(direct, None, "pod-a", 35)
    batch = Batch(
        "run:1",
        {
            ("demo", NOON): {"messages_in": 2, "tunnel_ms": 1500, "peak_tunnels": 9},
            ("demo", NOON + HOUR): {"bytes_in": 5},
            ("other", NOON): {"logins": 1},
        },
    )
    await store.add(batch)
    await store.add(batch)  # an answer lost: sent again
    assert await bucket(direct, "demo", NOON) == {"messages_in": 2, "tunnel_ms": 1500}
    assert await bucket(direct, "demo", NOON + HOUR) == {"bytes_in": 5}
    # another pod's batch with the same name adds up: tokens are per pod
    await RedisUsageStore(direct, None, "pod-b", 35).add(batch)
    assert (await bucket(direct, "demo", NOON))["messages_in"] == 4
    assert await store.app_ids() == {"demo", "other"}
    # the hash goes when the retention after its hour is over
    expires = await direct.expiretime(keys.usage("demo", hour_label(NOON)))
    assert expires == NOON + HOUR + 35 * 86400


async def test_the_peak_is_the_apps_not_the_pods(direct: Any) -> None:
    now = time.time()
    hour = hour_of(now)
    store = RedisUsageStore(direct, None, "pod-a", 35)
    # the attach script's field (quotas), as another writer would leave it
    await direct.hset(keys.usage("demo", hour_label(hour)), "peak_tunnels", 3)
    await store.add(Batch("run:1", {("demo", hour): {"messages_out": 1, "peak_tunnels": 99}}))
    found = await store.buckets("demo", hour - HOUR, now + 1)
    assert found == {hour: {"peak_tunnels": 3, "messages_out": 1}}  # not the pod's 99
    # An hour in which nothing connected or closed: a flush raises the newest bucket's
    # peak to the tunnels of the app's index (all pods), and only the newest's.
    await direct.zadd(keys.app_index("demo"), {f"t{i}": 0 for i in range(5)})
    gained = {("demo", hour - HOUR): {"tunnel_ms": 10}, ("demo", hour): {"tunnel_ms": 20}}
    await store.add(Batch("run:2", gained))
    found = await store.buckets("demo", hour - HOUR, now + 1)
    assert found[hour]["peak_tunnels"] == 5
    assert "peak_tunnels" not in found[hour - HOUR]
    # older than the retention: not even asked for
    short = RedisUsageStore(direct, None, "pod-a", 0)
    assert await short.buckets("demo", hour - 3 * HOUR, hour) == {}


async def test_an_outage_during_flushes_loses_and_doubles_nothing(
    proxy: TcpProxy, direct: Any
) -> None:
    client = client_of(proxy.url())
    counters = UsageCounters()
    meter = Meter(counters, RedisUsageStore(client, None, "pod-a", 35))
    demo = counters.of("demo")
    hour = hour_of(time.time())
    try:
        demo.messages_in += 1
        assert await meter.flush()
        # A partition that holds the bytes: the flush times out, and Redis receives it
        # when the link heals. Whether it arrives before or after the retry, it counts once.
        proxy.cut()
        demo.messages_in += 10
        assert not await meter.flush()
        demo.messages_in += 100
        assert not await meter.flush()
        proxy.restore()
        demo.messages_in += 1000
        await check_for(5, meter.flush, what="a flush after the outage")
        # A refused link: the flush fails at once, and the next one writes everything.
        proxy.cut(reject=True)
        demo.messages_in += 10_000
        demo.bytes_in += 7
        assert not await meter.flush()
        proxy.restore()
        await check_for(5, meter.flush, what="a flush after the second outage")
        await asyncio.sleep(0.2)  # anything held by the proxy has arrived by now
        stored: dict[str, int] = {}
        for h in (hour, hour + HOUR):  # the test may straddle an hour
            for name, value in (await bucket(direct, "demo", h)).items():
                stored[name] = stored.get(name, 0) + value
        assert stored == {"messages_in": 11_111, "bytes_in": 7}
        assert meter.failures >= 3
    finally:
        await client.aclose()


async def test_recent_deliveries_are_capped_newest_first_and_survive_an_outage(
    proxy: TcpProxy, direct: Any
) -> None:
    client = client_of(proxy.url())
    log = RedisDeliveryLog(client, None, kept=5)
    try:
        for n in range(7):
            log.record("demo", {"attempt": n})
        log.record("other", {"attempt": 100})
        await check_for(5, lambda: log._writer is None, what="the writer to finish")
        assert [r["attempt"] for r in await log.recent("demo", 10)] == [6, 5, 4, 3, 2]
        assert [r["attempt"] for r in await log.recent("demo", 2)] == [6, 5]
        assert [r["attempt"] for r in await log.recent("other", 10)] == [100]
        proxy.cut(reject=True)
        log.record("demo", {"attempt": 7})
        await asyncio.sleep(0.3)
        proxy.restore()
        await check_for(5, lambda: log._writer is None, what="the write after the outage")
        assert [r["attempt"] for r in await log.recent("demo", 10)] == [7, 6, 5, 4, 3]
        assert await direct.ttl(keys.deliveries("demo")) > 86400
    finally:
        await log.stop()
        await client.aclose()

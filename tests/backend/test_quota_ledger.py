"""The message-quota ledger's script (``scripts.RESERVE``) does what its reference in
Python (``allowance.settle``) does, on a real redis-server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import RedisServer
from tunnel_broker.backend.allowance import Answer, Ask, settle
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.quotas import KEEP_SECONDS, RedisLedger
from tunnel_broker.usage.periods import period_of

PERIOD = period_of("day", time.time())
FAR = 10**12  # a hold no test outlives


@pytest.fixture
async def ledger(redis_server: RedisServer) -> AsyncIterator[tuple[RedisLedger, aioredis.Redis]]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    health = RedisHealth()
    health.mark_healthy()
    try:
        yield RedisLedger(client, health), client
    finally:
        await client.aclose()


async def fields_in(client: aioredis.Redis) -> dict[str, int]:
    raw = await client.hgetall(keys.message_quota("app", PERIOD.name))
    return {str(name): int(value) for name, value in raw.items()}


async def test_the_script_settles_as_the_reference_does(
    ledger: tuple[RedisLedger, aioredis.Redis],
) -> None:
    script, client = ledger
    reference: dict[str, int] = {}
    rng = random.Random(17)
    totals = {"a": 0, "b": 0, "c": 0}
    for _ in range(400):
        pod = rng.choice("abc")
        totals[pod] += rng.choice((0, 0, 1, 3, 20))
        ask = Ask(
            pod,
            totals[pod],
            held=rng.choice((0, 0, 1, 5, 30)),
            need=rng.choice((0, 0, 1, 2, 40)),
            want=rng.choice((0, 1, 16, 1000)),
            release=rng.random() < 0.1,
            quota=rng.choice((500, 500, 500, 200)),
            hold_ms=FAR,
        )
        answer = await script.settle("app", PERIOD, ask)
        assert answer == settle(reference, ask, now_ms=0), ask
        stored = await fields_in(client)
        assert {k: v for k, v in stored.items() if not k.startswith("e:")} == {
            k: v for k, v in reference.items() if not k.startswith("e:")
        }
        assert {k for k in stored if k.startswith("e:")} == {
            k for k in reference if k.startswith("e:")
        }
    ttl = await client.ttl(keys.message_quota("app", PERIOD.name))
    assert ttl > 0  # the hash ends a day after its period
    expire_at = await client.expiretime(keys.message_quota("app", PERIOD.name))
    assert expire_at == int(PERIOD.end) + KEEP_SECONDS


async def test_a_lapsed_reservation_is_counted_as_used_by_the_next_call(
    ledger: tuple[RedisLedger, aioredis.Redis],
) -> None:
    script, client = ledger
    first = await script.settle("app", PERIOD, Ask("dead", 0, 0, 30, 30, False, 100, hold_ms=1))
    assert first == Answer(30, 0, 0, 70)
    await asyncio.sleep(0.01)
    answer = await script.settle("app", PERIOD, Ask("b", 0, 0, 1, 1, False, 100))
    assert answer == Answer(1, 30, 0, 69)
    assert (await fields_in(client))["r:dead"] == 1
    back = await script.settle("app", PERIOD, Ask("dead", 12, 0, 0, 0, False, 100))
    assert back.used == 30  # its use was in the 30 already

"""The pod's Redis pool gives back, after a while, the connections a burst opened."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.support.redis_server import RedisServer
from tunnel_broker.backend.redis.connection import KEEP_IDLE, TrimmedPool
from tunnel_broker.backend.redis.topology import RedisTopology


async def clients_on(server: RedisServer) -> int:
    watcher = aioredis.Redis.from_url(server.url)
    try:
        return len(await watcher.client_list()) - 1  # not counting this one
    finally:
        await watcher.aclose()


async def test_trim_closes_the_connections_no_call_needed_since_the_last_trim(
    redis_server: RedisServer,
) -> None:
    client, lease_client = RedisTopology.standalone(redis_server.url).pod_clients(3.0)
    pool = client.connection_pool
    assert isinstance(pool, TrimmedPool)
    try:
        # A burst: ten calls at once, each holding its connection for 0.1 s.
        await asyncio.gather(*(client.blpop(["nothing"], timeout=0.1) for _ in range(10)))
        assert await clients_on(redis_server) == 10
        assert await pool.trim() == 0  # the burst needed every one of them

        await client.ping()  # quiet: one connection at a time is enough
        await client.ping()
        assert await pool.trim() == 10 - 1 - KEEP_IDLE
        assert await clients_on(redis_server) == 1 + KEEP_IDLE
        assert await client.ping()  # what is left works, and more open on demand
        await asyncio.gather(*(client.blpop(["nothing"], timeout=0.1) for _ in range(5)))
        assert await clients_on(redis_server) == 5
    finally:
        await client.aclose(close_connection_pool=True)
        await lease_client.aclose(close_connection_pool=True)

"""A pod's Redis clients: one bounded pool for its work, and one for its lease.

redis-py's default pool raises ``MaxConnectionsError`` once 100 connections are in use,
which a burst of concurrent calls reaches (a pod settling hundreds of tunnels as an
outage of the business server ends); the pod then took itself for cut off from Redis.
A blocking pool makes such calls wait their turn instead, up to the socket timeout.

The lease is renewed through a client of its own: renewals queued behind the pod's own
work could miss the lease's expiry, and a live pod would be reaped.
"""

from __future__ import annotations

import redis.asyncio as aioredis

POOL_SIZE = 64  # connections: beyond this, calls queue (a Redis call takes ~0.2 ms here)


def _client(url: str, timeout: float, size: int) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=size,
        timeout=timeout,  # waiting for a free connection
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
    )
    return aioredis.Redis(connection_pool=pool)


def pod_clients(url: str, lease_seconds: float) -> tuple[aioredis.Redis, aioredis.Redis]:
    """(the client for everything, the client renewing the lease)."""
    timeout = max(1.0, lease_seconds / 3)
    return _client(url, timeout, POOL_SIZE), _client(url, timeout, 2)

"""A pod's Redis clients: one bounded pool for its work, and one for its lease.

redis-py's default pool raises ``MaxConnectionsError`` once 100 connections are in use,
which a burst of concurrent calls reaches (a pod settling hundreds of tunnels as an
outage of the business server ends); the pod then took itself for cut off from Redis.
A blocking pool makes such calls wait their turn instead, up to the socket timeout.

The lease is renewed through a client of its own: renewals queued behind the pod's own
work could miss the lease's expiry, and a live pod would be reaped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

POOL_SIZE = 64  # connections: beyond this, calls queue (a Redis call takes ~0.2 ms here)
KEEP_IDLE = 2  # connections a quiet pod keeps open


class TrimmedPool(aioredis.BlockingConnectionPool):
    """A blocking pool that closes, after a while, the connections a burst opened.

    A pool keeps every connection it ever opened, so a pod holds the connections of its
    busiest moment for good: up to ``POOL_SIZE`` per pod on the Redis server's client
    limit, and file descriptors that never return to their idle count (``bench/soak.py``
    found pods at +30% after a few minutes of mixed load). ``trim`` closes the
    connections that no call needed since the previous ``trim``: those that stayed at
    the bottom of the pool's stack of idle ones (it hands out the most recent first).
    """

    _fewest_idle = 0  # the fewest idle connections since the last trim

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._fewest_idle = min(self._fewest_idle, len(self._available_connections))
        return connection

    async def trim(self) -> int:
        """Close the idle connections no call needed since the last trim; how many."""
        unused = max(0, self._fewest_idle - KEEP_IDLE)
        spare = self._available_connections[:unused]
        del self._available_connections[:unused]
        self._fewest_idle = len(self._available_connections)
        await asyncio.gather(*(c.disconnect() for c in spare), return_exceptions=True)
        return len(spare)

"""Whether this pod can use Redis, and the one path every Redis call's failure takes.

An unreachable Redis (connection refused, timeout) or one answering with errors
(``maxmemory`` reached, ``READONLY`` during a failover) makes the pod unready until the
lease loop can write to it again; while unready, calls fail fast with
``BackendUnavailable`` instead of each waiting for its own timeout or error. Either way
the shared state could not be changed, and a pod that cannot register tunnels must not
receive new ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tunnel_broker.errors import BackendUnavailable

logger = logging.getLogger("tunnel_broker.backend.redis")

T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


class RedisHealth:
    def __init__(self) -> None:
        self.healthy = False
        self.healthy_since = 0.0

    def mark_healthy(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.healthy_since = time.monotonic()

    def mark_unhealthy(self, exc: BaseException) -> None:
        if self.healthy:
            if is_outage(exc):
                why = f"unreachable ({type(exc).__name__})"
            else:
                why = f"answering with errors ({str(exc)[:200]})"
            logger.error("redis %s: unready until it accepts writes again", why)
        self.healthy = False

    async def call(self, operation: Awaitable[T]) -> T:
        """Run a Redis operation; any Redis failure becomes ``BackendUnavailable``."""
        if not self.healthy:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise BackendUnavailable("redis is unreachable")
        try:
            return await operation
        except RedisError as exc:
            self.mark_unhealthy(exc)
            why = "unreachable" if is_outage(exc) else "answered with an error"
            raise BackendUnavailable(f"redis {why}") from exc

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

from redis.exceptions import ClusterDownError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tunnel_broker.errors import BackendUnavailable
from tunnel_broker.metrics import SharedStateHealth

logger = logging.getLogger("tunnel_broker.backend.redis")

T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    """Unreachable, rather than answering with errors: includes a cluster shard without
    a master (``CLUSTERDOWN``) and slots in migration (``TRYAGAIN``)."""
    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ClusterDownError | TryAgainError
    )


def raise_if_cancelled() -> None:
    """Raise the current task's cancellation if something swallowed it. On Python 3.11
    ``asyncio.wait_for`` returns the result when the awaited call finishes just as the
    cancel arrives, and redis-py wraps every command's send in it; redis-py may also end
    a call cancelled in flight with a connection error. A background loop that then goes
    round again never ends, and whoever stops it waits forever (seen once in thirty runs
    of tests/cluster/test_redis_error_replies.py: a pod's shutdown hung in the lease
    loop). Loops call this each round, and where they catch Redis errors: the task still
    counts the cancellation it was asked for."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop: no task to be cancelled
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisHealth:
    def __init__(self, topology: str = "standalone") -> None:
        self.topology = topology
        self.healthy = False
        self.healthy_since = 0.0
        self.outages = 0  # times this pod lost Redis (healthy -> unhealthy)
        self.failovers = 0  # times the master(s) written to changed (``upkeep.py``)
        self._masters: frozenset[str] = frozenset()

    def snapshot(self) -> SharedStateHealth:
        return SharedStateHealth(self.topology, self.healthy, self.outages, self.failovers)

    def saw_masters(self, masters: frozenset[str]) -> bool:
        """Whether the masters a pod writes to differ from those it wrote to before (a
        failover: counted); the first look, and looks that know none, are not."""
        if not masters:
            return False
        changed = bool(self._masters) and masters != self._masters
        if changed:
            self.failovers += 1
            logger.warning(
                "redis master changed: %s -> %s",
                ",".join(sorted(self._masters - masters)),
                ",".join(sorted(masters - self._masters)),
            )
        self._masters = masters
        return changed

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
            self.outages += 1
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

"""The pods an operator sees: each pod's own account of itself (ready, tunnels, version,
since when), kept in Redis for a few seconds at a time, next to its lease.

A pod's status expires by itself (``STATUS_TTL``): a pod killed without a goodbye drops
off the list within that time, as its lease tells the other pods it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from tunnel_broker import __version__
from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.timestamps import iso_time

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend

logger = logging.getLogger("tunnel_broker.admin.pods")

REPORT_SECONDS = 5.0
STATUS_TTL = 3 * REPORT_SECONDS


def pod_status(node_id: str, ready: bool, tunnels: int, started_at: float) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "ready": ready,
        "tunnels": tunnels,
        "started_at": iso_time(started_at),
        "last_seen": iso_time(time.time()),
        "version": __version__,
    }


class PodReporter:
    """Writes this pod's status every few seconds while it runs."""

    def __init__(self, backend: RedisBackend, status: Callable[[], dict[str, Any]]) -> None:
        self.backend = backend
        self.status = status

    async def run(self) -> None:
        from tunnel_broker.backend.redis import keys

        key = keys.node_status(self.backend.node_id)
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            status = self.status()
            mapping = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in status.items()}
            try:
                async with self.backend.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(key, mapping=mapping)
                    pipe.expire(key, int(STATUS_TTL))
                    await pipe.execute()
            except RedisError as exc:
                raise_if_cancelled()
                logger.debug("pod status not written: %s", exc)
            await asyncio.sleep(REPORT_SECONDS)

    async def goodbye(self) -> None:
        from tunnel_broker.backend.redis import keys

        with contextlib.suppress(RedisError):  # else it expires by itself
            await self.backend.redis.delete(keys.node_status(self.backend.node_id))


async def list_pods(backend: RedisBackend) -> list[dict[str, Any]]:
    """Every pod with a live status, by node id."""
    from tunnel_broker.backend.redis import keys

    async def read() -> list[dict[str, Any]]:
        node_ids = [str(n) for n in await backend.redis.zrange(keys.NODES, 0, -1)]
        if not node_ids:
            return []
        async with backend.redis.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.hgetall(keys.node_status(node_id))
            found = await pipe.execute()
        pods: list[dict[str, Any]] = []
        for node_id, raw in zip(node_ids, found, strict=True):
            if not raw:
                continue  # a lease without a status: starting, or gone
            pods.append(
                {
                    "node_id": node_id,
                    "ready": raw.get("ready") == "1",
                    "tunnels": int(raw.get("tunnels", 0)),
                    "started_at": raw.get("started_at"),
                    "last_seen": raw.get("last_seen"),
                    "version": raw.get("version"),
                }
            )
        return sorted(pods, key=lambda p: p["node_id"])

    return await backend.health.call(read())

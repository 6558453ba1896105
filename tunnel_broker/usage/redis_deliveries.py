"""Recent webhook deliveries in Redis, so that every pod's deliveries of an app show
whichever pod is asked: a capped list per app, ``tb:{app}:deliveries``, newest first.

The sender must never wait for Redis, so ``record`` only queues; one writer task empties
the queue (``LPUSH`` + ``LTRIM`` per app, one pipeline per round) while records keep
coming, so a busy pod writes many records per round trip. While Redis is unreachable the
queue keeps the newest ``KEPT`` records of each app (the list keeps no more anyway) and is
written once Redis answers: the log may miss the oldest records of a long outage, never
the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth, raise_if_cancelled
from tunnel_broker.usage.deliveries import KEPT, Record

logger = logging.getLogger("tunnel_broker.usage")

RETRY_SECONDS = 1.0
KEEP_SECONDS = 7 * 86400  # a quiet app's list goes after a week


class RedisDeliveryLog:
    def __init__(self, redis: Any, health: RedisHealth | None, kept: int = KEPT) -> None:
        self.redis = redis
        self.health = health
        self.kept = kept
        self._queued: dict[str, deque[str]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._stopped = False

    async def _call(self, operation: Any) -> Any:
        if self.health is None:
            return await operation
        return await self.health.call(operation)

    def record(self, app_id: str, record: Record) -> None:
        queued = self._queued.get(app_id)
        if queued is None:
            queued = self._queued[app_id] = deque(maxlen=self.kept)
        queued.append(json.dumps(record, separators=(",", ":")))
        if self._writer is None and not self._stopped:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_all(), name="deliveries-writer"
            )

    async def _write_all(self) -> None:
        try:
            while self._queued:
                raise_if_cancelled()  # one a Redis call swallowed (health.py)
                if not await self.write():
                    await asyncio.sleep(RETRY_SECONDS)
        finally:
            self._writer = None

    async def write(self) -> bool:
        """Write what is queued; whether it was written (else it stays queued)."""
        taken, self._queued = self._queued, {}
        pipe = self.redis.pipeline(transaction=False)
        for app_id, records in taken.items():
            key = keys.deliveries(app_id)
            pipe.lpush(key, *records)  # oldest first: the newest ends up at the head
            pipe.ltrim(key, 0, self.kept - 1)
            pipe.expire(key, KEEP_SECONDS)
        try:
            await self._call(pipe.execute())
        except Exception as exc:
            for app_id, records in taken.items():  # back in front of what came meanwhile
                newer = self._queued.get(app_id, ())
                self._queued[app_id] = deque([*records, *newer], maxlen=self.kept)
            logger.debug("recent deliveries not written yet (%s)", type(exc).__name__)
            return False
        return True

    async def recent(self, app_id: str, limit: int) -> list[Record]:
        raw = await self._call(self.redis.lrange(keys.deliveries(app_id), 0, limit - 1))
        found: list[Record] = []
        for item in raw:
            with contextlib.suppress(ValueError):
                found.append(json.loads(item))
        return found

    async def stop(self) -> None:
        """Write what is queued one last time (if Redis answers) and stop writing."""
        self._stopped = True
        writer = self._writer
        if writer is not None:
            done, _ = await asyncio.wait({writer}, timeout=2.0)
            if not done:  # Redis is not answering: give up on the rest
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        if self._queued:
            await self.write()

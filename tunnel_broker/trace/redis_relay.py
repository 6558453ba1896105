"""The live trace across pods: records go through a capped Redis stream per app, which
every watcher's pod reads.

An app is traced while its ``tracing`` key exists: a pod with a watcher of the app sets
it, with a short expiry it keeps renewing, and every pod looks for the keys of its apps
every ``FLAG_CHECK_SECONDS`` and taps the apps that have one. Records are written in one
pipelined round trip per ``FLUSH_SECONDS`` at most, and each watcher reads the stream
with a blocking read of its own (bounded by ``MAX_WATCHERS`` per pod). A stream rather
than pub/sub: a watcher opening the trace sees the last records first, and a stream is
read from the shard owning its key on a cluster with no subscription to manage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from tunnel_broker.apps import AppRegistry
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.trace.records import matches
from tunnel_broker.trace.tracer import MAX_WATCHERS, Tracer, Watcher
from tunnel_broker.usage.counters import UsageCounters

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend

logger = logging.getLogger("tunnel_broker.trace")

STREAM_LENGTH = 1000  # records kept per app (approximately: MAXLEN ~)
STREAM_IDLE_SECONDS = 3600  # a stream nobody wrote to for this long goes
HISTORY = 50  # records a new watcher sees from before it opened
FLAG_SECONDS = 15.0
FLAG_RENEW_SECONDS = 5.0
FLAG_CHECK_SECONDS = 1.0
FLUSH_SECONDS = 0.02
READ_BLOCK_MS = 1000


class RedisTracer(Tracer):
    def __init__(self, usage: UsageCounters, apps: AppRegistry, backend: RedisBackend) -> None:
        super().__init__(usage, apps)
        self.backend = backend
        self.redis = backend.redis
        # Blocking reads wait up to READ_BLOCK_MS: a client of their own, a connection each.
        self.reader = backend.topology.client(5.0, MAX_WATCHERS + 1, blocking_reads=True)
        self._outbox: list[tuple[str, str]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._readers: dict[Watcher, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []

    # ---- writing -----------------------------------------------------------------------

    def publish(self, app_id: str, record: dict[str, Any]) -> None:
        self._outbox.append((app_id, json.dumps(record, ensure_ascii=False)))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._send)

    def _send(self) -> None:
        self._flush = None
        outbox, self._outbox = self._outbox, []
        task = asyncio.get_running_loop().create_task(self._write(outbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, outbox: list[tuple[str, str]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for app_id, record in outbox:
                    stream = keys.trace(app_id)
                    pipe.xadd(stream, {"r": record}, maxlen=STREAM_LENGTH, approximate=True)
                for app_id in {app_id for app_id, _ in outbox}:
                    pipe.expire(keys.trace(app_id), STREAM_IDLE_SECONDS)
                await pipe.execute()
        except RedisError as exc:
            # A trace is a debugging view: records lost in an outage are not retried.
            logger.debug("%d trace records not written: %s", len(outbox), exc)

    # ---- watching ----------------------------------------------------------------------

    async def watch(self, watcher: Watcher) -> None:
        await super().watch(watcher)
        try:
            await self.backend.health.call(
                self.redis.set(keys.tracing(watcher.app_id), "1", px=int(FLAG_SECONDS * 1000))
            )
        except BaseException:
            await super().unwatch(watcher)
            raise
        task = asyncio.get_running_loop().create_task(self._read(watcher))
        self._readers[watcher] = task

    async def unwatch(self, watcher: Watcher) -> None:
        task = self._readers.pop(watcher, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.watchers.get(watcher.app_id, set()).discard(watcher)
        if not self.watchers.get(watcher.app_id):
            self.watchers.pop(watcher.app_id, None)  # the tap stays while the flag does

    def deliver(self, app_id: str, record: dict[str, Any]) -> None:
        """Records reach watchers through the stream only (``_read``), this pod's too."""

    async def _read(self, watcher: Watcher) -> None:
        stream = keys.trace(watcher.app_id)
        last = "$"
        try:
            recent = await self.reader.xrevrange(stream, count=HISTORY)
        except RedisError as exc:
            logger.debug("trace history not read: %s", exc)
        else:
            last = "0-0"  # no stream yet: its first record is new (``$`` could miss it)
            for entry_id, fields in reversed(recent):
                self._offer(watcher, fields)
                last = entry_id
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            try:
                answer = await self.reader.xread({stream: last}, count=200, block=READ_BLOCK_MS)
            except RedisError as exc:
                raise_if_cancelled()
                logger.debug("trace read failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    self._offer(watcher, fields)
                    last = entry_id

    @staticmethod
    def _offer(watcher: Watcher, fields: dict[str, str]) -> None:
        try:
            record = json.loads(fields["r"])
        except (KeyError, ValueError):
            return
        if matches(record, watcher.tunnel_id, watcher.user_id):
            watcher.offer(record)

    # ---- which apps are traced -----------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._renew_flags(), name="trace-flags"),
            loop.create_task(self._follow_flags(), name="trace-taps"),
        ]

    async def _renew_flags(self) -> None:
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            await asyncio.sleep(FLAG_RENEW_SECONDS)
            with contextlib.suppress(RedisError):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for app_id in self.watchers:
                        pipe.set(keys.tracing(app_id), "1", px=int(FLAG_SECONDS * 1000))
                    await pipe.execute()

    async def _follow_flags(self) -> None:
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            await asyncio.sleep(FLAG_CHECK_SECONDS)
            app_ids = [app.id for app in self.apps.all()]
            if not app_ids:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for app_id in app_ids:
                        pipe.exists(keys.tracing(app_id))
                    flags = await pipe.execute()
            except RedisError:
                raise_if_cancelled()
                continue  # keep the taps as they are until Redis answers again
            for app_id, flag in zip(app_ids, flags, strict=True):
                self.tap(app_id, bool(flag) or app_id in self.watchers)

    async def stop(self) -> None:
        for task in [*self._background, *self._readers.values(), *self._tasks]:
            task.cancel()
        for task in [*self._background, *self._readers.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await task
        self._readers.clear()
        if self._flush is not None:
            self._flush.cancel()
        await super().stop()
        await self.backend.topology.close(self.reader)

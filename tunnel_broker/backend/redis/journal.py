"""Each pod's undelivered events, kept in Redis, so that they outlive the pod.

A pod keeps a *journal* per app: a stream ``tb:{app}:j:<pod>`` of its undelivered
events. With durable events on (the default) every event not delivered within
``WRITE_WINDOW`` of being read is written there, and deleted once acknowledged; a pod
that stops writes whatever it still holds. A pod whose lease is gone has its journals
*adopted* by a live pod (``adoption.py``). Why a stream per pod rather than partitions
read through consumer groups, and why written behind rather than before sending:
docs/reliability.md, with the measurements.

Ids are the pod's own, ``<ms at start>-<n>``: increasing, so the stream keeps the order
events were queued in. The app's stored bytes, all pods together, are counted in a hash
with a field per pod; at ``event_store_max_bytes`` the pod stops reading the app's
sockets until it drains.

An event read but neither stored nor delivered is at risk, so that state is kept short:
when the oldest event waiting to be written is ``STORE_LAG`` old (Redis slow, frozen or
unreachable) the pod stops reading the app's sockets until the writes catch up
(back-pressure; what is read already is still sent). When Redis is back after an outage
the pod rewrites everything it holds (Redis may have restarted empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth, raise_if_cancelled
from tunnel_broker.backend.redis.registry import texts
from tunnel_broker.backend.redis.scripts import JOURNAL_WRITE, TAKE_JOURNAL
from tunnel_broker.webhooks.batching import Pending
from tunnel_broker.webhooks.delivery import AppEventQueue
from tunnel_broker.webhooks.events import from_record, record_bytes

logger = logging.getLogger("tunnel_broker.backend.redis")

CHUNK = 1000  # entries per script call: Lua's arguments and Redis's pause are bounded
WRITE_WINDOW = 0.005  # seconds an event may wait to be written (delivered first: never)
STORE_LAG = 0.25  # seconds an event may wait for its write before reading pauses
DELETE_DELAY = 0.1  # seconds a delete may wait for a write to go along with
_BLOCKED_POLL = 0.5  # how often a pod blocked by the stored-bytes limit looks again


class _AppJournal:
    """One app's journal on this pod: what to write and delete next."""

    def __init__(self, app_id: str, node_id: str) -> None:
        self.app_id = app_id
        self.key = keys.journal(app_id, node_id)
        self.bytes_key = keys.journal_bytes(app_id)
        self.member = keys.member(app_id, node_id)
        self.queue: AppEventQueue | None = None
        self.unwritten: list[Pending] = []
        self.deletes: list[tuple[str, int]] = []
        self.seq = 0
        self.deletes_since = 0.0  # when the oldest waiting delete was queued
        self.listed = False  # whether ``member`` is in ``keys.JOURNALS``
        self.stored_bytes = 0  # the app's, all pods together, as last seen
        self.over_limit = False  # stored bytes at the app's limit
        self.lagging = False  # writes ``STORE_LAG`` behind
        self.lock = asyncio.Lock()  # one writer of the stream at a time
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class EventJournal:
    """This pod's journals (an ``EventStore``: ``webhooks/store.py``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        node_id: str,
        health: RedisHealth,
        durable: bool,
        max_bytes: Callable[[str], int],
    ) -> None:
        self.redis = client
        self.node_id = node_id
        self.health = health
        self.durable = durable
        self.max_bytes = max_bytes
        self.prefix = f"{int(time.time() * 1000)}-"
        self._write = client.register_script(JOURNAL_WRITE)
        self._take = client.register_script(TAKE_JOURNAL)
        self._apps: dict[str, _AppJournal] = {}

    def _app(self, app_id: str) -> _AppJournal:
        app = self._apps.get(app_id)
        if app is None:
            app = self._apps[app_id] = _AppJournal(app_id, self.node_id)
            app.task = asyncio.get_running_loop().create_task(
                self._run(app), name=f"journal:{app_id}"
            )
        return app

    def stored_bytes(self) -> dict[str, int]:
        return {app_id: app.stored_bytes for app_id, app in self._apps.items()}

    # ---- the event store ------------------------------------------------------------------

    def added(self, queue: AppEventQueue, pending: Pending) -> None:
        if not self.durable:
            return
        app = self._app(queue.app_id)
        app.queue = queue
        pending.stored = False
        unwritten = app.unwritten
        unwritten.append(pending)
        if len(unwritten) == 1:  # else the writer has a write due already
            app.wake.set()
        elif not app.lagging and pending.queued_at - unwritten[0].queued_at > STORE_LAG:
            logger.warning("app %s: events wait to be stored; reading paused", app.app_id)
            app.lagging = True
            self._update_block(app)

    def delivered(self, queue: AppEventQueue, batch: list[Pending], at_once: bool = False) -> None:
        app = self._apps.get(queue.app_id)
        if app is None:
            return
        deletes = app.deletes
        had = len(deletes)
        for pending in batch:
            pending.stored = True  # written, or delivered first: never to be written now
            if pending.entry is not None:
                deletes.append(pending.entry)
        if deletes and (not had or at_once):
            now = asyncio.get_running_loop().time()
            app.deletes_since = now - DELETE_DELAY if at_once else now
            app.wake.set()

    def write_again(self, queue: AppEventQueue, pendings: list[Pending]) -> None:
        """Move these events to the end of the journal (deleted where they are, written
        anew): events just adopted belong before them, and a journal adopted later must
        hold each tunnel's events in order."""
        if not self.durable:
            return
        app = self._app(queue.app_id)
        for pending in pendings:
            if pending.entry is not None:
                app.deletes.append(pending.entry)
                pending.entry = None
            if pending.stored:
                pending.stored = False
                app.unwritten.append(pending)
        app.wake.set()

    # ---- writing ----------------------------------------------------------------------------

    async def _run(self, app: _AppJournal) -> None:
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            if not self.health.healthy:
                # Everything is rewritten when Redis is back: ``rewrite``.
                await asyncio.sleep(0.05)
                continue
            due = self._due(app, loop.time())
            if due == 0.0:
                try:
                    async with app.lock:
                        await self._flush(app)
                except RedisError as exc:
                    raise_if_cancelled()
                    self.health.mark_unhealthy(exc)
                except Exception:
                    raise_if_cancelled()
                    logger.exception("app %s: writing the event journal failed", app.app_id)
                    await asyncio.sleep(1)
                continue
            blocked = app.over_limit  # by the other pods' stored bytes: look again
            timeout = due if due is not None else (_BLOCKED_POLL if blocked else None)
            try:
                await asyncio.wait_for(app.wake.wait(), timeout)
            except TimeoutError:
                raise_if_cancelled()  # a cancel meeting the timeout
                if due is None and blocked:
                    with contextlib.suppress(RedisError):
                        await self._recount(app)
            app.wake.clear()

    @staticmethod
    def _due(app: _AppJournal, now: float) -> float | None:
        """Seconds until the next write (0: now), None when there is nothing to write.

        An event is written ``WRITE_WINDOW`` after it was queued, unless delivered by
        then: with a business server that keeps up most never are (a call to Redis costs
        the broker several times what an event does), and those that wait longer are
        written together. Deletes are not urgent: they go along with the next write, or
        alone after ``DELETE_DELAY``."""
        if app.unwritten:
            return max(0.0, app.unwritten[0].queued_at + WRITE_WINDOW - now)
        if app.deletes:
            if len(app.deletes) >= CHUNK:
                return 0.0
            return max(0.0, app.deletes_since + DELETE_DELAY - now)
        return None

    async def _flush(self, app: _AppJournal) -> None:
        """Write one chunk of what is queued and delete what was delivered."""
        # Those delivered meanwhile are ``stored`` already and need no writing.
        batch = [p for p in app.unwritten[:CHUNK] if not p.stored]
        app.unwritten = app.unwritten[CHUNK:]
        deletes, app.deletes = app.deletes[: CHUNK * 4], app.deletes[CHUNK * 4 :]
        if not batch and not deletes:
            self._caught_up(app)  # all delivered meanwhile: reading may resume
            self._update_block(app)
            return
        args = self._appends(app, batch)
        for entry_id, size in deletes:
            args += (entry_id, size)
        try:
            await self._list(app)
            total = await self._write(keys=[app.key, app.bytes_key], args=args)
        except RedisError:
            app.unwritten[:0] = batch
            app.deletes[:0] = deletes
            raise
        for pending in batch:
            pending.stored = True
        self._caught_up(app)
        self._saw(app, int(total))

    @staticmethod
    def _caught_up(app: _AppJournal) -> None:
        """Clear ``lagging`` unless what is still unwritten has waited too long."""
        if app.lagging:
            now = asyncio.get_running_loop().time()
            app.lagging = bool(app.unwritten) and now - app.unwritten[0].queued_at > STORE_LAG

    def _appends(self, app: _AppJournal, batch: list[Pending]) -> list[str | bytes | int]:
        args: list[str | bytes | int] = [self.node_id, len(batch)]
        prefix = self.prefix
        for pending in batch:
            app.seq += 1
            entry_id = f"{prefix}{app.seq}"
            record = record_bytes(pending.event)
            pending.entry = (entry_id, len(record))
            args += (entry_id, record)
        return args

    async def _list(self, app: _AppJournal) -> None:
        if not app.listed:
            await self.redis.sadd(keys.JOURNALS, app.member)
            app.listed = True

    def _saw(self, app: _AppJournal, total: int) -> None:
        app.stored_bytes = total
        over = total >= self.max_bytes(app.app_id)
        if over and not app.over_limit:
            logger.warning(
                "app %s: %d bytes of events stored, at its limit; reading paused",
                app.app_id,
                total,
            )
        app.over_limit = over
        self._update_block(app)

    @staticmethod
    def _update_block(app: _AppJournal) -> None:
        queue = app.queue
        if queue is not None:
            blocked = app.over_limit or app.lagging
            if blocked != queue.blocked:
                queue.block(blocked)

    async def _recount(self, app: _AppJournal) -> None:
        values = await self.redis.hvals(app.bytes_key)
        self._saw(app, sum(int(v) for v in texts(values)))

    async def rewrite(self, queues: dict[str, AppEventQueue]) -> None:
        """Write everything each queue holds afresh, in its order (after an outage:
        Redis may have lost the journal, or kept writes whose answer was lost)."""
        if not self.durable:
            return
        for app in self._apps.values():
            app.listed = False  # the set of journals may be gone too
        for app_id, queue in queues.items():
            await self.keep(app_id, queue.buffer.undelivered(), queue)

    async def keep(
        self, app_id: str, pendings: list[Pending], queue: AppEventQueue | None = None
    ) -> None:
        """Make the app's journal hold exactly ``pendings``, in order (at a stop, or a
        rewrite). Built aside and renamed into place: a pod killed meanwhile leaves the
        journal as it was. May raise ``RedisError``."""
        app = self._app(app_id)
        if queue is not None:
            app.queue = queue
        async with app.lock:
            app.unwritten.clear()
            app.deletes.clear()
            app.lagging = False  # nothing waits to be written any more
            if pendings:
                await self._replace(app, pendings)
            else:
                pipe = self.redis.pipeline(transaction=False)
                pipe.delete(app.key)
                pipe.hdel(app.bytes_key, self.node_id)
                pipe.srem(keys.JOURNALS, app.member)
                await pipe.execute()
                app.listed = False
            await self._recount(app)

    async def _replace(self, app: _AppJournal, pendings: list[Pending]) -> None:
        aside = app.key + ":new"
        await self.redis.delete(aside)
        for start in range(0, len(pendings), CHUNK):
            args = self._appends(app, pendings[start : start + CHUNK])
            await self._write(keys=[aside, app.bytes_key], args=args)
        await self._list(app)
        size = sum(p.entry[1] for p in pendings if p.entry is not None)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rename(aside, app.key)
        pipe.hset(app.bytes_key, self.node_id, size)
        await pipe.execute()
        for pending in pendings:
            pending.stored = True

    async def forget(self) -> None:
        """Drop this pod's journals (another pod adopted them while this one was cut
        off) and what was waiting to be written."""
        for app in self._apps.values():
            async with app.lock:
                app.unwritten.clear()
                app.deletes.clear()
                app.lagging = False
                pipe = self.redis.pipeline(transaction=False)
                pipe.delete(app.key)
                pipe.hdel(app.bytes_key, self.node_id)
                pipe.srem(keys.JOURNALS, app.member)
                await pipe.execute()
                app.listed = False

    # ---- adopting -------------------------------------------------------------------------

    async def adopt(self, owner: str, app_ids: list[str]) -> dict[str, list[Pending]]:
        """Take ``owner``'s journals of ``app_ids`` (app id -> events in order, stored in
        this pod's journal now). Records that do not decode are logged and skipped."""
        adopted: dict[str, list[Pending]] = {}
        own = owner == self.node_id
        last = f"({self.prefix}0" if own else "+"
        for app_id in app_ids:
            app = self._app(app_id)
            taken: list[Pending] = []
            async with app.lock:
                await self._list(app)
                done = False
                while not done:
                    first = app.seq + 1
                    reply = await self._take(
                        keys=[keys.journal(app_id, owner), app.key, app.bytes_key],
                        args=[
                            owner,
                            self.node_id,
                            keys.owed_prefix(app_id),
                            self.prefix,
                            first,
                            CHUNK,
                            last,
                        ],
                    )
                    done = bool(int(reply[0]))
                    records = texts(reply[1:])
                    app.seq += len(records)
                    for offset, record in enumerate(records):
                        try:
                            event = from_record(record)
                        except ValueError:
                            logger.error("journal of %s: a record is not an event", owner)
                            continue
                        entry = (f"{self.prefix}{first + offset}", len(record.encode()))
                        taken.append(Pending(event, entry=entry))
            if not own:
                await self.redis.srem(keys.JOURNALS, keys.member(app_id, owner))
            if taken:
                logger.warning("adopted %d undelivered events of %s", len(taken), owner)
                adopted[app_id] = taken
        return adopted

    async def exists(self, app_id: str, nodes: list[str]) -> set[str]:
        """Those of ``nodes`` with a journal of the app."""
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(keys.journal(app_id, node))
        found = await pipe.execute()
        return {node for node, n in zip(nodes, found, strict=True) if n}

    async def stop(self) -> None:
        tasks = [app.task for app in self._apps.values() if app.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

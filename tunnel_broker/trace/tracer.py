"""Who is watching which app, and the taps that feed them.

An app nobody traces costs one ``None`` check per event (``AppCounters.tap``). While
someone traces it, every pod that may see its activity sets a tap on the app's counters;
the tap turns events, pushes and deliveries into records (``records.py``), at most
``RECORDS_PER_SECOND`` per app and pod (a busy app's trace is sampled rather than
slowing its traffic: what was left out is counted in a ``dropped`` record), and hands
them to the relay: straight to this process's watchers (memory backend), or to Redis for
the watchers on every pod (``redis_relay.py``).

A watcher's queue is bounded too: a browser that reads slowly loses the oldest records,
and is told how many, instead of holding the broker's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunnel_broker.apps import AppRegistry
from tunnel_broker.errors import ApiError
from tunnel_broker.ratelimit import TokenBucket
from tunnel_broker.targets import Target
from tunnel_broker.timestamps import iso_time
from tunnel_broker.trace.records import delivery_record, event_record, matches, push_record
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.webhooks.events import EncodedEvent

RECORDS_PER_SECOND = 500
WATCHER_QUEUE = 1000
MAX_WATCHERS = 16  # per node: each holds a connection (and, with Redis, a blocking read)

Publish = Callable[[str, dict[str, Any]], None]


class AppTap:
    """``usage.counters.Tap`` for one traced app."""

    def __init__(
        self,
        app_id: str,
        apps: AppRegistry,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.apps = apps
        self.publish = publish
        self.clock = clock
        self.bucket = TokenBucket(RECORDS_PER_SECOND, RECORDS_PER_SECOND, clock())
        self.dropped = 0

    def _show(self) -> bool:
        app = self.apps.get(self.app_id)
        return app is not None and app.trace_payloads

    def _admit(self) -> bool:
        if self.bucket.take(self.clock()):
            if self.dropped:
                self.publish(self.app_id, dropped_record(self.dropped, "rate"))
                self.dropped = 0
            return True
        self.dropped += 1
        return False

    def event(self, app_id: str, event: EncodedEvent) -> None:
        if self._admit():
            self.publish(app_id, event_record(event, self._show()))

    def push(self, app_id: str, target: Any, payload: str | bytes, via: str) -> None:
        if isinstance(target, Target) and self._admit():
            self.publish(app_id, push_record(target, payload, via, self._show()))

    def delivery(self, app_id: str, record: dict[str, Any]) -> None:
        if self._admit():
            self.publish(app_id, delivery_record(record))


def dropped_record(count: int, why: str) -> dict[str, Any]:
    return {"kind": "dropped", "at": iso_time(time.time()), "count": count, "why": why}


@dataclass(eq=False)
class Watcher:
    """One open trace: its filter and the records waiting for it."""

    app_id: str
    tunnel_id: str | None = None
    user_id: str | None = None
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(WATCHER_QUEUE)
    )
    lost: int = 0

    def offer(self, record: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # the oldest goes: the newest is what a trace is for
            self.lost += 1
        self.queue.put_nowait(record)

    async def next(self, within: float) -> dict[str, Any] | None:
        """The next record (a ``dropped`` one first if records were lost), or None after
        ``within`` seconds without one."""
        if self.lost:
            lost, self.lost = self.lost, 0
            return dropped_record(lost, "slow_reader")
        try:
            return await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            return None


class Tracer:
    """The watchers of this node, and the taps of the apps they watch (memory backend:
    this process sees all of an app's activity; ``RedisTracer`` extends it to pods)."""

    def __init__(self, usage: UsageCounters, apps: AppRegistry) -> None:
        self.usage = usage
        self.apps = apps
        self.watchers: dict[str, set[Watcher]] = {}

    async def watch(self, watcher: Watcher) -> None:
        if sum(len(w) for w in self.watchers.values()) >= MAX_WATCHERS:
            raise ApiError(
                "too_many_traces", f"this node serves at most {MAX_WATCHERS} live traces"
            )
        self.watchers.setdefault(watcher.app_id, set()).add(watcher)
        self.tap(watcher.app_id, True)

    async def unwatch(self, watcher: Watcher) -> None:
        watchers = self.watchers.get(watcher.app_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[watcher.app_id]
                self.tap(watcher.app_id, False)

    def tap(self, app_id: str, on: bool) -> None:
        counters = self.usage.of(app_id)
        if on and counters.tap is None:
            counters.tap = AppTap(app_id, self.apps, self.publish)
        elif not on:
            counters.tap = None

    def publish(self, app_id: str, record: dict[str, Any]) -> None:
        self.deliver(app_id, record)

    def deliver(self, app_id: str, record: dict[str, Any]) -> None:
        """Hand a record to this node's watchers of the app whose filter it passes."""
        for watcher in self.watchers.get(app_id, ()):
            if matches(record, watcher.tunnel_id, watcher.user_id):
                watcher.offer(record)

    async def start(self) -> None:
        """Nothing to run for one process."""

    async def stop(self) -> None:
        for app_id in list(self.watchers):
            self.tap(app_id, False)
        self.watchers.clear()

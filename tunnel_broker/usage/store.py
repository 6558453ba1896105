"""Where metered usage is kept: what every usage store does, and the in-process one.

The meter (``meter.py``) hands a store one ``Batch`` per flush; usage queries
(``report.py``) read an app's buckets back. The memory store serves a single process
(memory backend); ``redis_store.py`` keeps the buckets of every pod in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tunnel_broker.usage.buckets import Bucket, add_into, hour_of, retained_since


@dataclass(frozen=True)
class Batch:
    """What one flush adds: a bucket of increments per (app, hour). ``token`` names the
    batch, so that a store can tell a retry of a batch it already applied (its answer
    lost) from a new one: the meter sends a failed batch again unchanged, token and all."""

    token: str
    buckets: dict[tuple[str, int], Bucket]

    def apps(self) -> set[str]:
        return {app_id for app_id, _ in self.buckets}


class UsageStore(Protocol):
    """Hourly buckets per app, kept for the retention."""

    writes_peak: bool
    """Whether the meter's ``peak_tunnels`` goes into the buckets (in Redis another writer
    keeps the peak of all pods together, ``redis_store.py``)."""

    async def add(self, batch: Batch) -> None:
        """Add a batch; applying a batch with the same token twice adds it once. Raises
        if it could not tell that the batch is stored (the meter then sends it again)."""

    async def buckets(self, app_id: str, first_hour: int, end: float) -> dict[int, Bucket]:
        """The app's buckets of the hours from ``first_hour`` to before ``end`` that
        hold anything, by hour."""

    async def app_ids(self) -> set[str]:
        """The apps with usage kept (an app deleted since still has its usage billed)."""


class MemoryUsageStore:
    """The buckets of this process, dropped after ``retention_days``."""

    writes_peak = True

    def __init__(self, retention_days: int, clock: Callable[[], float] = time.time) -> None:
        self.retention_days = retention_days
        self.clock = clock
        self._apps: dict[str, dict[int, Bucket]] = {}
        self._pruned_at = -1  # the hour of the last pruning: once an hour is enough

    async def add(self, batch: Batch) -> None:
        # Nothing here can fail half-way, so a token never comes twice.
        for (app_id, hour), increments in batch.buckets.items():
            hours = self._apps.setdefault(app_id, {})
            add_into(hours.setdefault(hour, {}), increments)
        self.prune()

    def prune(self) -> None:
        now = self.clock()
        if hour_of(now) == self._pruned_at:
            return
        self._pruned_at = hour_of(now)
        oldest = retained_since(now, self.retention_days)
        for hours in self._apps.values():
            for hour in [h for h in hours if h < oldest]:
                del hours[hour]

    async def buckets(self, app_id: str, first_hour: int, end: float) -> dict[int, Bucket]:
        oldest = retained_since(self.clock(), self.retention_days)
        hours = self._apps.get(app_id, {})
        return {
            hour: dict(bucket)
            for hour, bucket in sorted(hours.items())
            if max(first_hour, oldest) <= hour < end and any(bucket.values())
        }

    async def app_ids(self) -> set[str]:
        return set(self._apps)

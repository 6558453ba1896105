"""The meter: every ``usage_flush_seconds`` it takes what each app's counters gained since
the last time and adds it to the app's hourly bucket in the usage store.

Why a difference taken now and then rather than writing each message: the hot path only
bumps integers (``counters.py``); the store sees one batch per flush whatever the
traffic (one Redis round trip).

Exact, not approximately right:

- *taking* (``take``) moves the counters' gains into ``pending`` and remembers the
  counters' values, so nothing is taken twice; it never fails.
- *writing* freezes ``pending`` into a ``Batch`` with a token and sends it. A batch that
  fails (Redis unreachable) is kept and sent again, unchanged, at the next flush, while
  new gains wait in ``pending``; the store applies a token once, so a batch whose answer
  was lost is not added twice (``redis_store.py``). Only one batch is ever in flight.
- ``stop`` takes and writes a last time.

Which hour: counts go to the hour they are taken in. Tunnel-time accrues over the span
since the last take and is shared between the hours that span covers (``split_span``);
flushes are timed to fall on hour boundaries, so such spans are short. The peak of
concurrent tunnels (memory store only) goes to every hour the span touches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.logs import LogThrottle
from tunnel_broker.usage.buckets import HOUR, PEAK, Bucket, hour_of, split_span
from tunnel_broker.usage.counters import COUNTS, UsageCounters
from tunnel_broker.usage.store import Batch, UsageStore

logger = logging.getLogger("tunnel_broker.usage")
_failures = LogThrottle(logger)

Clock = Callable[[], float]


class Meter:
    def __init__(
        self,
        counters: UsageCounters,
        store: UsageStore,
        flush_seconds: float = 1.0,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.counters = counters
        self.store = store
        self.flush_seconds = max(0.01, flush_seconds)
        self.clock = clock
        self.monotonic = monotonic
        # Per app: the counts and tunnel-milliseconds at the last take.
        self._taken: dict[str, tuple[int, ...]] = {}
        self._taken_at = clock()
        self.pending: dict[tuple[str, int], Bucket] = {}
        self.in_flight: Batch | None = None
        self._run_id = secrets.token_hex(6)  # tokens of this process differ from any other's
        self._seq = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # flushes that could not write (for tests and logs)

    # ---- taking ----------------------------------------------------------------------------

    def take(self) -> None:
        """Move what the counters gained since the last take into ``pending``."""
        now, mono = self.clock(), self.monotonic()
        since, self._taken_at = self._taken_at, now
        hour = hour_of(now)
        write_peak = self.store.writes_peak
        for app_id, counters in self.counters:
            values = (
                *(getattr(counters, name) for name in COUNTS),
                int(counters.tunnel_seconds(mono) * 1000),
            )
            before = self._taken.get(app_id)
            self._taken[app_id] = values
            gained = values if before is None else tuple(map(int.__sub__, values, before))
            if any(gained[:-1]):
                self._add(app_id, hour, dict(zip(COUNTS, gained, strict=False)))
            if gained[-1]:
                for part_hour, share in split_span(since, now, gained[-1]):
                    self._add(app_id, part_hour, {"tunnel_ms": share})
            if write_peak:
                peak = counters.take_peak()
                if peak:
                    for part_hour in range(hour_of(since), hour + HOUR, HOUR):
                        self._add(app_id, part_hour, {PEAK: peak})

    def _add(self, app_id: str, hour: int, gained: Bucket) -> None:
        bucket = self.pending.setdefault((app_id, hour), {})
        for name, value in gained.items():
            if name == PEAK:
                bucket[PEAK] = max(bucket.get(PEAK, 0), value)
            elif value:
                bucket[name] = bucket.get(name, 0) + value

    # ---- writing ---------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Take, then write: the batch that failed last time if any, else what is
        pending. Whether nothing is left unwritten."""
        self.take()
        async with self._lock:
            if self.in_flight is None:
                if not self.pending:
                    return True
                self._seq += 1
                self.in_flight = Batch(f"{self._run_id}:{self._seq}", self.pending)
                self.pending = {}
            try:
                await self.store.add(self.in_flight)
            except Exception as exc:  # whatever went wrong, the batch is sent again
                raise_if_cancelled()
                self.failures += 1
                _failures.error(
                    "flush",
                    "usage of %d apps not written yet (%s); retrying",
                    len(self.in_flight.apps()),
                    type(exc).__name__,
                )
                return False
            self.in_flight = None
            return not self.pending

    async def run(self) -> None:
        """Flush every ``flush_seconds``, and at each hour's start (so that an hour's
        tunnel-time is its own)."""
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            now = self.clock()
            to_next_hour = hour_of(now) + HOUR - now
            await asyncio.sleep(min(self.flush_seconds, to_next_hour + 0.001))
            await self.flush()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._taken_at = self.clock()
            self._task = asyncio.get_running_loop().create_task(self.run(), name="usage-meter")

    async def stop(self) -> None:
        """Stop flushing on the timer, and write the last counts (twice if a batch that
        failed before is in the way). Nothing if it was never started."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for _ in range(2):
            if await self.flush():
                return
        apps = {app_id for app_id, _ in self.pending}
        if self.in_flight is not None:
            apps |= self.in_flight.apps()
        logger.error("usage of %d apps could not be written before stopping", len(apps))

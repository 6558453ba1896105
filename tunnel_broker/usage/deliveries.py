"""Each webhook request's outcome: counted in the app's usage, kept in the app's recent
deliveries (what the console's app view and ``GET /v1/webhooks/deliveries`` show), and
handed to the live trace.

A record says when, how it ended and how long it took, never what was sent: no body, no
header, no URL (a webhook URL may carry a token in its query), no secret::

    {"at": "2026-12-02T14:03:07.123Z", "status": 500, "outcome": "http_error",
     "latency_ms": 12.4, "events": 3, "attempt": 2, "error": "HTTP 500"}

``status`` is null when no HTTP answer came (timeout, connection refused); ``outcome``
is ``ok`` or the failure the sender names (``http_error``, ``timeout``,
``network_error``, ...); ``attempt`` counts from 1 for the same batch (or Wafer event).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from tunnel_broker.usage.counters import UsageCounters

KEPT = 200  # records per app
MAX_ERROR_CHARS = 200

Record = dict[str, Any]


class _Clock:
    """ISO 8601 UTC with milliseconds, as ``timestamps.iso_time`` writes it, with the
    second's text kept: webhook requests rarely share a millisecond, and formatting a
    datetime each time was most of a record's cost."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        ts = time.time()
        second = int(ts)
        if second != self.second:
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return f"{self.prefix}.{int((ts - second) * 1000):03d}Z"


class DeliveryLog(Protocol):
    """The last ``KEPT`` records of each app."""

    def record(self, app_id: str, record: Record) -> None:
        """Keep a record (at once, or soon: never blocking the sender)."""

    async def recent(self, app_id: str, limit: int) -> list[Record]:
        """Up to ``limit`` of the app's records, newest first."""


class MemoryDeliveryLog:
    """This process's records, in memory."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._apps: dict[str, deque[Record]] = {}

    def record(self, app_id: str, record: Record) -> None:
        records = self._apps.get(app_id)
        if records is None:
            records = self._apps[app_id] = deque(maxlen=self.kept)
        records.append(record)

    async def recent(self, app_id: str, limit: int) -> list[Record]:
        records = self._apps.get(app_id)
        if not records:
            return []
        newest = list(reversed(records))
        return newest[:limit]


class DeliveryRecorder:
    """What both senders (``webhooks/sender.py``, ``wafer/sender.py``) call after each
    HTTP attempt: the usage counts, the record, the trace."""

    __slots__ = ("clock", "log", "usage")

    def __init__(self, usage: UsageCounters, log: DeliveryLog) -> None:
        self.usage = usage
        self.log = log
        self.clock = _Clock()

    def attempt(
        self,
        app_id: str,
        *,
        started: float,
        attempt: int,
        events: int,
        outcome: str = "ok",
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        """One request ended; ``started`` is its ``time.perf_counter()`` at the start,
        ``attempt`` counts from 1. A failure is retried, so each attempt after the first
        is a retry; the events count once acknowledged."""
        latency = time.perf_counter() - started
        counters = self.usage.of(app_id)
        counters.webhook_requests += 1
        if attempt > 1:
            counters.webhook_retries += 1
        if outcome == "ok":
            counters.webhook_events += events
        else:
            counters.webhook_failures += 1
        record: Record = {
            "at": self.clock.now(),
            "status": status,
            "outcome": outcome,
            "latency_ms": round(latency * 1000, 1),
            "events": events,
            "attempt": attempt,
            "error": error[:MAX_ERROR_CHARS] if error else None,
        }
        self.log.record(app_id, record)
        tap = counters.tap
        if tap is not None:
            tap.delivery(app_id, dict(record))  # its own copy: the log's stays as it is

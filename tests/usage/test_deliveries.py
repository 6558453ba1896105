"""What each webhook attempt leaves: counts, a record in the app's recent deliveries, a
trace record; in memory."""

from __future__ import annotations

import time
from typing import Any

from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.deliveries import DeliveryRecorder, MemoryDeliveryLog


class Tap:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def event(self, app_id: str, event: Any) -> None:
        pass

    def push(self, app_id: str, target: Any, payload: str | bytes, via: str) -> None:
        pass

    def delivery(self, app_id: str, record: dict[str, Any]) -> None:
        record["kind"] = "delivery"  # a tap may change its copy
        self.records.append(record)


async def test_attempts_count_and_leave_records_newest_first() -> None:
    usage = UsageCounters()
    log = MemoryDeliveryLog(kept=3)
    recorder = DeliveryRecorder(usage, log)
    tap = Tap()
    usage.of("demo").tap = tap
    started = time.perf_counter()
    recorder.attempt(
        "demo", started=started, attempt=1, events=4, outcome="timeout", error="x" * 500
    )
    recorder.attempt("demo", started=started, attempt=2, events=4, outcome="http_error", status=502)
    recorder.attempt("demo", started=started, attempt=3, events=4, status=204)
    recorder.attempt("other", started=started, attempt=1, events=1, status=200)
    demo = usage.of("demo")
    assert (demo.webhook_requests, demo.webhook_failures, demo.webhook_retries) == (3, 2, 2)
    assert demo.webhook_events == 4
    recent = await log.recent("demo", 10)
    assert [r["attempt"] for r in recent] == [3, 2, 1]
    assert recent[0]["status"] == 204 and recent[0]["outcome"] == "ok"
    assert recent[0]["error"] is None
    assert recent[2]["status"] is None and len(recent[2]["error"]) == 200
    assert set(recent[0]) == {"at", "status", "outcome", "latency_ms", "events", "attempt", "error"}
    assert recent[0]["at"].endswith("Z") and recent[0]["latency_ms"] >= 0
    assert [r["attempt"] for r in tap.records] == [1, 2, 3]  # only the traced app
    assert "kind" not in recent[0]  # the tap's change stays in its copy
    for n in range(4, 8):
        recorder.attempt("demo", started=started, attempt=n, events=1, status=200)
    assert [r["attempt"] for r in await log.recent("demo", 10)] == [7, 6, 5]
    assert [r["attempt"] for r in await log.recent("demo", 1)] == [7]
    assert await log.recent("nobody", 5) == []

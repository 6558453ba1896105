"""Usage answers and the billing CSV, over the memory store."""

from __future__ import annotations

import calendar
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.usage.buckets import HOUR, hour_iso
from tunnel_broker.usage.counters import COUNTS
from tunnel_broker.usage.report import (
    CSV_COLUMNS,
    all_usage,
    app_usage,
    parse_csv,
    render_csv,
    tunnel_minutes,
)
from tunnel_broker.usage.store import Batch, MemoryUsageStore
from tunnel_broker.usage.window import Window

NOON = calendar.timegm((2026, 12, 2, 12, 0, 0))


async def test_an_app_gets_its_buckets_in_the_window_and_their_totals() -> None:
    store = MemoryUsageStore(35, clock=lambda: NOON + 10)
    await store.add(
        Batch(
            "t1",
            {
                ("demo", NOON - 2 * HOUR): {"messages_in": 1, "tunnel_ms": 90_000},
                ("demo", NOON - HOUR): {"messages_in": 2, "peak_tunnels": 4},
                ("demo", NOON): {"bytes_out": 7, "peak_tunnels": 2},
                ("other", NOON): {"messages_in": 100},
            },
        )
    )
    report = await app_usage(store, "demo", Window(NOON - HOUR, NOON + 10))
    assert [b["hour"] for b in report["buckets"]] == [
        "2026-12-02T11:00:00Z",
        "2026-12-02T12:00:00Z",
    ]
    assert report["from"] == "2026-12-02T11:00:00Z" and report["to"] == "2026-12-02T12:00:10Z"
    totals = report["totals"]
    assert totals["messages_in"] == 2 and totals["bytes_out"] == 7 and totals["peak_tunnels"] == 4
    assert set(totals) == {*COUNTS, "tunnel_minutes", "peak_tunnels"}
    whole = await app_usage(store, "demo", Window(NOON - 3 * HOUR, NOON + 10))
    assert whole["totals"]["tunnel_minutes"] == 1.5
    everyone = await all_usage(store, Window(NOON, NOON + 10), known=["quiet"])
    assert [r["app_id"] for r in everyone] == ["demo", "other", "quiet"]
    assert everyone[2]["buckets"] == [] and everyone[2]["totals"]["messages_in"] == 0


async def test_buckets_older_than_the_retention_are_dropped() -> None:
    now = [NOON]
    store = MemoryUsageStore(2, clock=lambda: now[0])
    await store.add(Batch("t1", {("demo", NOON - 2 * 86400): {"logins": 1}}))
    await store.add(Batch("t2", {("demo", NOON - 2 * 86400 - HOUR): {"logins": 5}}))
    found = await store.buckets("demo", 0, NOON + HOUR)
    assert found == {NOON - 2 * 86400: {"logins": 1}}  # the older one is gone already
    now[0] = NOON + HOUR
    await store.add(Batch("t3", {("demo", NOON + HOUR): {"logins": 2}}))
    assert await store.buckets("demo", 0, NOON + 2 * HOUR) == {NOON + HOUR: {"logins": 2}}


def test_tunnel_minutes_are_decimals_to_the_thousandth() -> None:
    assert tunnel_minutes(60_000) == Decimal("1.000")
    assert tunnel_minutes(1) == Decimal("0.000")
    assert tunnel_minutes(90) == Decimal("0.002")  # 0.0015 rounds half to even
    assert tunnel_minutes(123_456_789) == Decimal("2057.613")


counts = st.integers(min_value=0, max_value=2**53)
buckets = st.fixed_dictionaries(
    {name: counts for name in COUNTS}
    | {"tunnel_ms": st.integers(min_value=0, max_value=10**12), "peak_tunnels": counts}
)
app_ids = st.from_regex(r"[a-z0-9][a-z0-9_,\"\-]{0,15}", fullmatch=True)


@given(
    st.dictionaries(
        app_ids, st.dictionaries(st.integers(min_value=0, max_value=800), buckets, max_size=4)
    )
)
async def test_the_csv_reads_back_as_what_was_kept(usage: dict[str, dict[int, Any]]) -> None:
    store = MemoryUsageStore(35, clock=lambda: NOON)
    batch = {
        (app, NOON - h * HOUR): dict(b) for app, hours in usage.items() for h, b in hours.items()
    }
    await store.add(Batch("t", batch))
    reports = await all_usage(store, Window(NOON - 801 * HOUR, NOON + HOUR))
    text = render_csv(reports)
    rows = parse_csv(text)
    expected = [
        (app, NOON - h * HOUR, bucket)
        for app in sorted(usage)
        for h, bucket in sorted(usage[app].items(), reverse=True)
        if any(bucket.values())
    ]
    assert len(rows) == len(expected)
    for row, (app, hour, bucket) in zip(rows, expected, strict=True):
        assert row["app_id"] == app
        assert row["hour"] == hour_iso(hour)
        assert all(row[name] == bucket[name] for name in COUNTS)
        assert row["peak_tunnels"] == bucket["peak_tunnels"]
        assert row["tunnel_minutes"] == tunnel_minutes(bucket["tunnel_ms"])
    assert render_csv(reports) == text  # stable
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)


@pytest.mark.parametrize(
    "text",
    ["", "app_id,hour\n", ",".join(CSV_COLUMNS) + "\ndemo,2026-12-02T12:00:00Z,1\n"],
)
def test_what_is_not_a_usage_csv_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_csv(text)

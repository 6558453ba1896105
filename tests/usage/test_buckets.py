"""The arithmetic of hourly buckets: hours, shares of tunnel-time, sums and peaks."""

from __future__ import annotations

import calendar

from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.usage.buckets import (
    HOUR,
    add_into,
    hour_iso,
    hour_label,
    hour_of,
    hours_between,
    retained_since,
    split_span,
    total,
)

NOON = calendar.timegm((2026, 12, 2, 12, 0, 0))


def test_hours_are_utc_and_named_as_keys_and_the_api_name_them() -> None:
    assert hour_of(NOON + 1799.9) == NOON
    assert hour_of(NOON - 0.001) == NOON - HOUR
    assert hour_label(NOON) == "2026120212"
    assert hour_iso(NOON) == "2026-12-02T12:00:00Z"


def test_hours_between_leaves_out_the_end() -> None:
    assert hours_between(NOON, NOON) == []
    assert hours_between(NOON, NOON + 0.5) == [NOON]
    assert hours_between(NOON, NOON + 2 * HOUR) == [NOON, NOON + HOUR]
    assert hours_between(NOON, NOON + 2 * HOUR + 1) == [NOON, NOON + HOUR, NOON + 2 * HOUR]


def test_retention_counts_whole_days_before_the_current_hour() -> None:
    assert retained_since(NOON + 10, 35) == NOON - 35 * 86400


def test_a_span_within_an_hour_goes_to_that_hour() -> None:
    assert split_span(NOON + 10, NOON + 20, 1234) == [(NOON, 1234)]


def test_a_span_over_a_boundary_is_shared_by_time() -> None:
    # a quarter before noon, three quarters after
    assert split_span(NOON - 1, NOON + 3, 4000) == [(NOON - HOUR, 1000), (NOON, 3000)]
    # three hours: 30 min, 60 min, 30 min
    shares = split_span(NOON - 1800, NOON + HOUR + 1800, 120_000)
    assert shares == [(NOON - HOUR, 30_000), (NOON, 60_000), (NOON + HOUR, 30_000)]


@given(
    st.floats(min_value=0, max_value=3 * HOUR),
    st.floats(min_value=0, max_value=5 * HOUR),
    st.integers(min_value=0, max_value=10**12),
)
def test_shares_add_up_exactly_and_fall_in_the_span(offset: float, length: float, ms: int) -> None:
    start = NOON + offset
    end = start + length
    shares = split_span(start, end, ms)
    assert sum(share for _, share in shares) == ms
    assert all(share >= 0 for _, share in shares)
    hours = [hour for hour, _ in shares]
    assert hours == sorted(hours) and hours[-1] == hour_of(end)
    assert hours[0] == hour_of(start) or len(hours) == 1


def test_counts_add_and_the_peak_is_the_largest() -> None:
    bucket = {"messages_in": 2, "peak_tunnels": 5}
    add_into(bucket, {"messages_in": 3, "bytes_in": 7, "peak_tunnels": 4})
    assert bucket == {"messages_in": 5, "bytes_in": 7, "peak_tunnels": 5}
    add_into(bucket, {"peak_tunnels": 9})
    assert bucket["peak_tunnels"] == 9
    summed = total([bucket, {"messages_in": 1, "tunnel_ms": 60_000, "peak_tunnels": 2}])
    assert summed["messages_in"] == 6 and summed["tunnel_ms"] == 60_000
    assert summed["peak_tunnels"] == 9 and summed["logins"] == 0  # every field present

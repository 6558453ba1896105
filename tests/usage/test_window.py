"""Parsing ``from`` and ``to`` of a usage query, and the window they make."""

from __future__ import annotations

import calendar
import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.errors import ApiError
from tunnel_broker.usage.buckets import HOUR, hour_of
from tunnel_broker.usage.window import parse_instant, usage_window

NOW = calendar.timegm((2026, 12, 2, 14, 30, 0))

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(st.datetimes(timezones=offsets | st.just(UTC)))
def test_every_rfc3339_date_time_reads_as_its_instant(moment: datetime) -> None:
    text = moment.isoformat()
    if moment.utcoffset() == timedelta(0) and moment.microsecond % 2:
        text = text.replace("+00:00", "Z")
    expected = (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
    expected -= moment.utcoffset().total_seconds()  # type: ignore[union-attr]
    assert parse_instant(text) == pytest.approx(expected, abs=1e-6)


@given(st.dates())
def test_a_date_is_its_midnight_utc(day: object) -> None:
    assert parse_instant(str(day)) == datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()


@given(st.text(max_size=50))
def test_anything_else_is_a_value_error_never_another_exception(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_instant(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T10:00:00",  # no offset
        "2026-12-01 10:00:00Z",
        "20261201",
        "2026-02-30",
        "2026-12-01T24:00:00Z",
        "2026-12-01T10:00:00+24:00",
        "2026-12-01T10:00Z",
        "yesterday",
        "",
        "2" * 41,
    ],
)
def test_what_is_not_rfc3339_or_a_date_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_leap_seconds_and_lower_case_are_rfc3339() -> None:
    assert parse_instant("2016-12-31t23:59:60z") == calendar.timegm((2017, 1, 1, 0, 0, 0))
    assert (
        parse_instant("2026-12-01T10:00:00.5+08:00")
        == calendar.timegm((2026, 12, 1, 2, 0, 0)) + 0.5
    )


def test_the_default_is_the_24_hours_ending_with_the_current_one() -> None:
    window = usage_window(None, None, NOW, 35)
    assert window.end == NOW
    assert window.start == hour_of(NOW) - 23 * HOUR
    assert window.iso() == ("2026-12-01T15:00:00Z", "2026-12-02T14:30:00Z")


def test_a_to_alone_gets_the_24_hours_before_it() -> None:
    window = usage_window(None, "2026-12-02T12:00:00Z", NOW, 35)
    assert window.iso() == ("2026-12-01T12:00:00Z", "2026-12-02T12:00:00Z")


def test_dates_make_whole_days() -> None:
    window = usage_window("2026-12-01", "2026-12-02", NOW, 35)
    assert window.iso() == ("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")


def test_what_lies_beyond_the_retention_or_the_current_hour_is_cut() -> None:
    window = usage_window("2000-01-01", "9999-12-31", NOW, 35)
    assert window.start == hour_of(NOW) - 35 * 86400
    assert window.end == hour_of(NOW) + HOUR
    old = usage_window("2000-01-01", "2000-02-01", NOW, 35)
    assert old.start == old.end  # empty: nothing that old is kept


@pytest.mark.parametrize(
    ("raw_from", "raw_to", "field"),
    [
        ("nonsense", None, "from"),
        (None, "2026-13-01", "to"),
        ("2026-12-02", "2026-12-01", "from"),
        ("2026-12-01", "2026-12-01", "from"),
    ],
)
def test_bad_values_are_validation_failures_naming_the_field(
    raw_from: str | None, raw_to: str | None, field: str
) -> None:
    with pytest.raises(ApiError) as caught:
        usage_window(raw_from, raw_to, NOW, 35)
    assert caught.value.code == "validation_failed"
    assert caught.value.extra["errors"][0]["field"] == field


@given(st.text(max_size=60), st.text(max_size=60))
def test_any_text_is_a_window_or_a_validation_failure(raw_from: str, raw_to: str) -> None:
    try:
        window = usage_window(raw_from, raw_to, NOW, 35)
    except ApiError as exc:
        assert exc.code == "validation_failed"
    else:
        assert window.start <= window.end

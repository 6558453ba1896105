"""UTC calendar periods of the message quota, and the hour of a usage bucket."""

from __future__ import annotations

import calendar

import pytest

from tunnel_broker.usage.periods import hour_name, period_of


def at(*when: int) -> float:
    return float(calendar.timegm((*when, 0, 0, 0)[:6]))


def test_an_hour_runs_from_its_start_to_the_next() -> None:
    period = period_of("hour", at(2026, 12, 2, 14, 59, 59))
    assert period.name == "h2026120214"
    assert (period.start, period.end) == (at(2026, 12, 2, 14, 0, 0), at(2026, 12, 2, 15, 0, 0))
    assert period.contains(at(2026, 12, 2, 14, 0, 0))
    assert not period.contains(at(2026, 12, 2, 15, 0, 0))
    assert period_of("hour", period.end).name == "h2026120215"


def test_a_day_is_a_utc_day() -> None:
    period = period_of("day", at(2026, 12, 31, 23, 30, 0))
    assert period.name == "d20261231"
    assert period.end == at(2027, 1, 1, 0, 0, 0)
    assert period_of("day", period.end).name == "d20270101"


@pytest.mark.parametrize(
    ("when", "name", "end"),
    [
        ((2026, 2, 14, 8, 0, 0), "m202602", (2026, 3, 1, 0, 0, 0)),
        ((2028, 2, 29, 23, 59, 59), "m202802", (2028, 3, 1, 0, 0, 0)),
        ((2026, 12, 31, 23, 59, 59), "m202612", (2027, 1, 1, 0, 0, 0)),
    ],
)
def test_a_month_is_a_calendar_month(
    when: tuple[int, ...], name: str, end: tuple[int, ...]
) -> None:
    period = period_of("month", at(*when))
    assert period.name == name
    assert period.start == at(*when[:2], 1, 0, 0, 0)
    assert period.end == at(*end)


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown period"):
        period_of("week", 0.0)


def test_hour_name_is_what_usage_buckets_are_named_after() -> None:
    assert hour_name(at(2026, 12, 2, 14, 5, 0)) == "2026120214"

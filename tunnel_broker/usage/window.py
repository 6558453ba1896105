"""The window of time a usage query covers, from its ``from`` and ``to`` arguments: what
``GET /v1/usage`` and the admin API accept, and what they answer for a bad value.

A value is an RFC 3339 date-time (``2026-12-01T10:30:00Z``, ``...+08:00``; an offset is
required) or a date (``2026-12-01``: its midnight, UTC). The window is [from, to): a
date as ``to`` is the first day left out. Without ``from``, the 24 hours ending with
``to``'s hour; without ``to``, now. What lies before the retention or after the current
hour holds nothing and is left out of the answer (no error: the question is fair).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from tunnel_broker.errors import ApiError
from tunnel_broker.usage.buckets import HOUR, hour_of, retained_since

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
MAX_CHARS = 40


def parse_instant(raw: str) -> float:
    """An RFC 3339 date-time or a date as unix seconds; ``ValueError`` for anything
    else (a date that does not exist, an offset of 24 hours or more included)."""
    if len(raw) > MAX_CHARS:
        raise ValueError("too long")
    if _DATE.fullmatch(raw):
        year, month, day = (int(part) for part in raw.split("-"))
        return datetime(year, month, day, tzinfo=UTC).timestamp()
    found = _DATE_TIME.fullmatch(raw)
    if found is None:
        raise ValueError("not a date or RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction, zulu, sign, off_h, off_m = found.group(7, 8, 9, 10, 11)
    offset = 0
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError("offset out of range")
        offset = (int(off_h) * 60 + int(off_m)) * 60 * (-1 if sign == "-" else 1)
    leap = second == 60  # RFC 3339 allows a leap second; Python does not
    # As if in UTC, then moved by the offset: no time zone arithmetic that could leave
    # the years Python knows (0001-01-01T00:00:00+01:00 is in year 0).
    moment = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=UTC)
    return moment.timestamp() + (1 if leap else 0) - offset + float(f"0.{fraction or 0}")


@dataclass(frozen=True)
class Window:
    """[start, end) in unix seconds, already cut to what the store can hold."""

    start: float
    end: float

    @property
    def first_hour(self) -> int:
        return hour_of(self.start)

    def iso(self) -> tuple[str, str]:
        return _iso(self.start), _iso(self.end)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _instant(name: str, raw: str) -> float:
    try:
        return parse_instant(raw.strip())
    except (ValueError, OverflowError, OSError):
        raise ApiError.invalid(
            name,
            "an RFC 3339 date-time (2026-12-01T10:00:00Z) or a date (2026-12-01)",
            f"{name} must be an RFC 3339 date-time with an offset, or a date",
        ) from None


def usage_window(
    raw_from: str | None, raw_to: str | None, now: float, retention_days: int
) -> Window:
    """The window of a usage query; ``ApiError`` (422 ``validation_failed``) for a value
    that is not a date or date-time, or a ``from`` not before ``to``."""
    end = now if raw_to is None else _instant("to", raw_to)
    start = hour_of(end - 1e-6) - 23 * HOUR if raw_from is None else _instant("from", raw_from)
    if start >= end:
        raise ApiError.invalid("from", "before 'to'", "from must be before to")
    start = max(start, retained_since(now, retention_days))
    end = min(end, hour_of(now) + HOUR)
    return Window(start, max(start, end))


def day_start(day: date) -> float:
    """A date's midnight, UTC, as unix seconds (for callers holding dates)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()

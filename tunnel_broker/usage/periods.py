"""UTC calendar periods: the hour, day or month a message quota counts in, and the hour a
usage bucket is named after.

A period has a name that sorts and reads well in Redis keys (``h2026120214``,
``d20261202``, ``m202612``) and its bounds in unix seconds: callers keep the period they
are in and compute the next one only once ``now`` passes its end, so a message pays one
comparison, not a calendar computation. The clock is the caller's (injectable in tests);
pods of a cluster agree on a period as far as their clocks agree (NTP).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

PERIOD_KINDS = ("hour", "day", "month")
HOUR = 3600
DAY = 86400


@dataclass(frozen=True, slots=True)
class Period:
    kind: str  # hour, day or month
    name: str  # the kind's initial and the UTC date down to it: h2026120214
    start: float  # unix seconds, included
    end: float  # unix seconds, excluded: the next period's start

    def contains(self, now: float) -> bool:
        return self.start <= now < self.end


def period_of(kind: str, now: float) -> Period:
    """The ``kind`` period (UTC) that ``now`` (unix seconds) falls in."""
    moment = time.gmtime(now)
    if kind == "hour":
        start = float(int(now) - int(now) % HOUR)
        return Period(kind, time.strftime("h%Y%m%d%H", moment), start, start + HOUR)
    if kind == "day":
        start = float(int(now) - int(now) % DAY)
        return Period(kind, time.strftime("d%Y%m%d", moment), start, start + DAY)
    if kind == "month":
        year, month = moment.tm_year, moment.tm_mon
        start = float(calendar.timegm((year, month, 1, 0, 0, 0)))
        following = (year + 1, 1) if month == 12 else (year, month + 1)
        end = float(calendar.timegm((*following, 1, 0, 0, 0)))
        return Period(kind, time.strftime("m%Y%m", moment), start, end)
    raise ValueError(f"unknown period {kind!r}: one of {', '.join(PERIOD_KINDS)}")


def hour_name(now: float) -> str:
    """The UTC hour of ``now`` as usage buckets name it: ``YYYYMMDDHH``."""
    return time.strftime("%Y%m%d%H", time.gmtime(now))

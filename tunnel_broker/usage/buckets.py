"""Hourly usage buckets: which hour a moment belongs to, what a bucket holds, and how a
span of tunnel-time is shared between the hours it covers.

A bucket is a plain ``dict[str, int]`` of the fields in ``FIELDS`` (absent means 0): the
monotonic counts of ``counters.COUNTS``, ``tunnel_ms`` (tunnel-time in integer
milliseconds: integers add exactly in Redis' ``HINCRBY`` and across pods, floats would
not) and ``peak_tunnels`` (a maximum, not a sum). Hours are the unix time of their start,
in UTC.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from tunnel_broker.usage.counters import COUNTS

HOUR = 3600
DAY = 86400
SUMMED = (*COUNTS, "tunnel_ms")  # fields that add up
FIELDS = (*SUMMED, "peak_tunnels")  # every field of a bucket
PEAK = "peak_tunnels"

Bucket = dict[str, int]


def hour_of(ts: float) -> int:
    """The start of the UTC hour holding ``ts`` (unix seconds)."""
    return int(ts // HOUR) * HOUR


def hour_label(hour: int) -> str:
    """``YYYYMMDDHH``: the hour as Redis keys name it."""
    return time.strftime("%Y%m%d%H", time.gmtime(hour))


def hour_iso(hour: int) -> str:
    """The hour as the API shows it: ``2026-12-02T14:00:00Z``."""
    return datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H:00:00Z")


def add_into(bucket: Bucket, more: Bucket) -> None:
    """Add ``more`` to ``bucket``: sums for the counts, the larger peak."""
    for name, value in more.items():
        if name == PEAK:
            if value > bucket.get(PEAK, 0):
                bucket[PEAK] = value
        elif value:
            bucket[name] = bucket.get(name, 0) + value


def total(buckets: Iterable[Bucket]) -> Bucket:
    """Every field of the buckets together (zeros included, so a total always has them
    all)."""
    summed: Bucket = dict.fromkeys(FIELDS, 0)
    for bucket in buckets:
        add_into(summed, bucket)
    return summed


def split_span(start: float, end: float, amount: int) -> list[tuple[int, int]]:
    """Share ``amount`` (tunnel-milliseconds accrued evenly over [start, end]) between the
    hours the span covers, in proportion to the time in each: ``(hour, share)`` pairs
    whose shares add up to ``amount`` exactly (the last hour takes the rounding)."""
    first, last = hour_of(start), hour_of(end)
    if first == last or end <= start:
        return [(last, amount)]
    shares: list[tuple[int, int]] = []
    given = 0
    span = end - start
    hour = first
    while hour < last:
        share = int(amount * (min(hour + HOUR, end) - max(hour, start)) / span)
        shares.append((hour, share))
        given += share
        hour += HOUR
    shares.append((last, amount - given))
    return shares


def hours_between(first: int, end: float) -> list[int]:
    """The hours starting at ``first`` (an hour) and before ``end``."""
    return list(range(first, math.ceil(end), HOUR))


def retained_since(now: float, retention_days: int) -> int:
    """The oldest hour kept: ``retention_days`` whole days before the current hour."""
    return hour_of(now) - retention_days * DAY

"""Usage as its readers see it: an app's hourly buckets and totals over a period (``GET
/v1/usage`` and the admin API answer the same shape), and the CSV an operator bills from.

In both, tunnel-time is shown in minutes (``tunnel_minutes``) rather than the stored
milliseconds; hours without usage are left out.

CSV: a header line, then one row per app per hour, oldest first within an app::

    app_id,hour,messages_in,bytes_in,...,tunnels_opened,tunnel_minutes,peak_tunnels
    demo,2026-12-02T14:00:00Z,120,5400,...,3,42.517,3

Every count is an integer column; ``tunnel_minutes`` is a decimal with three places
(rounded half to even from the milliseconds kept). ``parse_csv`` reads it back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from tunnel_broker.usage.buckets import PEAK, Bucket, hour_iso, total
from tunnel_broker.usage.counters import COUNTS
from tunnel_broker.usage.store import UsageStore
from tunnel_broker.usage.window import Window, parse_instant

CSV_COLUMNS = ("app_id", "hour", *COUNTS, "tunnel_minutes", PEAK)
_THOUSANDTH = Decimal("0.001")


def tunnel_minutes(tunnel_ms: int) -> Decimal:
    """Milliseconds of tunnel-time as minutes, to the thousandth."""
    return (Decimal(tunnel_ms) / 60000).quantize(_THOUSANDTH)


def shown(bucket: Bucket) -> dict[str, Any]:
    """A bucket as the API shows it: every count, ``tunnel_minutes``, ``peak_tunnels``."""
    out: dict[str, Any] = {name: bucket.get(name, 0) for name in COUNTS}
    out["tunnel_minutes"] = float(tunnel_minutes(bucket.get("tunnel_ms", 0)))
    out[PEAK] = bucket.get(PEAK, 0)
    return out


async def app_usage(store: UsageStore, app_id: str, window: Window) -> dict[str, Any]:
    """One app's usage over ``window``: ``{"app_id", "from", "to", "buckets", "totals"}``
    (totals: sums, and the highest ``peak_tunnels``)."""
    found = await store.buckets(app_id, window.first_hour, window.end)
    start, end = window.iso()
    return {
        "app_id": app_id,
        "from": start,
        "to": end,
        "buckets": [{"hour": hour_iso(hour), **shown(b)} for hour, b in sorted(found.items())],
        "totals": shown(total(found.values())),
    }


async def all_usage(
    store: UsageStore, window: Window, known: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Every app's usage over ``window``: the apps with usage kept and the ``known``
    ones (an app deleted since is still billed), by app id."""
    app_ids = sorted(set(known) | await store.app_ids())
    return [await app_usage(store, app_id, window) for app_id in app_ids]


def render_csv(reports: Iterable[dict[str, Any]]) -> str:
    """The CSV of ``app_usage`` answers (one or many apps): what an operator bills
    from."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for report in reports:
        for bucket in report["buckets"]:
            minutes = Decimal(str(bucket["tunnel_minutes"])).quantize(_THOUSANDTH)
            writer.writerow(
                [
                    report["app_id"],
                    bucket["hour"],
                    *(bucket[n] for n in COUNTS),
                    minutes,
                    bucket[PEAK],
                ]
            )
    return out.getvalue()


def parse_csv(text: str) -> list[dict[str, Any]]:
    """Rows of a usage CSV: ``app_id`` and ``hour`` as text, counts as ``int``,
    ``tunnel_minutes`` as ``Decimal``. ``ValueError`` for a file that is not one."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != CSV_COLUMNS:
        raise ValueError("not a usage CSV (its header differs)")
    rows: list[dict[str, Any]] = []
    for line in reader:
        if len(line) != len(CSV_COLUMNS):
            raise ValueError(f"row {len(rows) + 1} has {len(line)} columns")
        row: dict[str, Any] = {"app_id": line[0], "hour": line[1]}
        parse_instant(line[1])  # an hour it can read
        for name, value in zip(CSV_COLUMNS[2:], line[2:], strict=True):
            row[name] = Decimal(value) if name == "tunnel_minutes" else int(value)
        rows.append(row)
    return rows

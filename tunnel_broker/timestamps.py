"""Timestamps as the API and webhooks write them."""

from __future__ import annotations

from datetime import UTC, datetime

_last_ms = -1
_last_text = ""


def iso_time(ts: float) -> str:
    """ISO 8601 UTC with milliseconds; consecutive events mostly share a millisecond, so
    the last rendering is kept."""
    global _last_ms, _last_text
    ms = int(ts * 1000)
    if ms != _last_ms:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        _last_text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _last_ms = ms
    return _last_text

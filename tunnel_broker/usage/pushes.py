"""Counting a message the business server sent (``POST /v1/messages``, a webhook reply's
``send``): once, whatever its fan-out, with its payload's size (UTF-8 for text), and
shown to the app's live trace if someone watches it."""

from __future__ import annotations

from tunnel_broker.targets import Target
from tunnel_broker.usage.counters import AppCounters


def count_push(
    counters: AppCounters, app_id: str, target: Target, payload: str | bytes, via: str
) -> None:
    """``via``: ``api`` or ``reply``."""
    counters.pushes += 1
    if isinstance(payload, str) and not payload.isascii():
        counters.push_bytes += len(payload.encode())
    else:
        counters.push_bytes += len(payload)
    if counters.tap is not None:
        counters.tap.push(app_id, target, payload, via)

"""Retry delays: exponential backoff with full jitter, as a small injectable object.

Used by the webhook relay (and later the Redis reconnect); tests inject a fixed random
source so delays are deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1 = first retry): uniform in [0, bound]
        so many brokers retrying one receiver do not synchronise."""
        bound = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return self.rng.uniform(bound / 2, bound)


def parse_retry_after(value: str | None, now: float, limit: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), clamped to
    ``[0, limit]``; ``None`` when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), limit)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - now, limit))

"""Retry delays: exponential backoff with "equal jitter", as a small injectable object.

The one backoff of the broker: the webhook sender, the WeChat client's retries, the Redis
subscriber's reconnects and the CLI's wait for Redis all draw their delays here. Tests
inject a seeded random source so delays are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    # None: the module's shared generator (building a Random seeds it from the OS).
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("delays must not be negative")

    def bound(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (1 = first retry)."""
        exponent = min(max(0, attempt - 1), 60)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, attempt: int, rand: Callable[[], float] | None = None) -> float:
        """A delay in ``[bound/2, bound]``: growing and capped like plain exponential
        backoff, spread so that many brokers retrying one peer do not synchronise, and
        never so short that a retry hammers a peer that just failed."""
        bound = self.bound(attempt)
        draw = rand or (self.rng.random if self.rng is not None else random.random)
        return bound / 2 + bound / 2 * draw()


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

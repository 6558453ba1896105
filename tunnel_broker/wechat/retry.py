"""How often, and how patiently, to retry a WeChat call that failed temporarily."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tunnel_broker.backoff import Backoff


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts, spaced by the broker's ``Backoff`` with doubling delays.

    The n-th retry waits between half and all of ``min(max_delay, base_delay * 2**(n-1))``.
    """

    attempts: int = 3
    """Total tries, the first one included; 1 means no retry."""
    base_delay: float = 0.2
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        return Backoff(self.base_delay, 2.0, self.max_delay).delay(retry_number, rand)


NO_RETRY = RetryPolicy(attempts=1)

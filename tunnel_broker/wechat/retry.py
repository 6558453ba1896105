"""How often, and how patiently, to retry a WeChat call that failed temporarily."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and "equal jitter".

    The n-th retry waits between half and all of ``min(max_delay, base_delay * 2**(n-1))``:
    growing, capped, and spread out so that many brokers retrying at once do not stampede.
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
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry_number - 1, 60))
        return ceiling / 2 + ceiling / 2 * rand()


NO_RETRY = RetryPolicy(attempts=1)

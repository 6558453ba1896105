"""Token buckets: a rate with a burst, checked without timers or tasks."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self._rate = rate
        self._capacity = burst
        self._tokens = burst
        self._stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one."""
        if now is None:
            now = time.monotonic()
        tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def seconds_until_token(self) -> float:
        return max(0.0, (1.0 - self._tokens) / self._rate)

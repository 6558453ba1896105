"""Token buckets: a rate with a burst, checked without timers or tasks; and budgets that
keep one bucket per key (an app, a client address) within a bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    __slots__ = ("_capacity", "_credit", "_credit_until", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self._rate = rate
        self._capacity = burst
        self._tokens = burst
        self._stamp = time.monotonic() if now is None else now
        self._credit = 0.0
        self._credit_until = 0.0

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one (the bucket's own first, then any credit)."""
        if now is None:
            now = time.monotonic()
        tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        if self._credit >= 1.0 and now < self._credit_until:
            self._credit -= 1.0
            return True
        return False

    def forgive(self, seconds: float, now: float | None = None) -> None:
        """The caller did not look at this client for ``seconds`` (it stopped reading
        under back-pressure): what the client sent meanwhile waited unread and now
        arrives at once. Allow what the rate allowed over that time on top of the
        burst, for as long again: a client that kept to the rate is not punished for
        the broker's pause, and one that saved up gains no more than it could have sent.
        """
        if seconds <= 0:
            return
        if now is None:
            now = time.monotonic()
        if now >= self._credit_until:
            self._credit = 0.0
        self._credit += seconds * self._rate
        self._credit_until = max(self._credit_until, now + max(seconds, 1.0))

    def seconds_until_token(self) -> float:
        return max(0.0, (1.0 - self._tokens) / self._rate)


class Budgets:
    """One ``TokenBucket`` per key, made on first use. At most ``max_keys`` are kept, the
    least recently used dropped first: keys may come from clients (their addresses), and
    a forgotten key only starts again with a full burst."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float, TokenBucket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def spend(self, key: str, rate: float, burst: float) -> TokenBucket | None:
        """Spend one token of ``key``'s budget; the bucket if it is exhausted."""
        entry = self._buckets.get(key)
        if entry is None or entry[:2] != (rate, burst):
            # New, or its app's limits changed since.
            entry = (rate, burst, TokenBucket(rate, burst))
            self._buckets[key] = entry
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket = entry[2]
        return None if bucket.take() else bucket

"""One backoff for every retry loop; Retry-After parsing."""

from __future__ import annotations

import random

from tunnel_broker.backoff import Backoff, parse_retry_after
from tunnel_broker.wechat import RetryPolicy


def test_backoff_grows_with_jitter_and_respects_the_cap() -> None:
    backoff = Backoff(base=1, factor=2, cap=10, rng=random.Random(1))
    delays = [backoff.delay(n) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1
    assert all(d <= 10 for d in delays)
    assert delays[5] >= 5


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7", now=0, limit=60) == 7
    assert parse_retry_after("700", now=0, limit=60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470, limit=60) == 10
    assert parse_retry_after("soon", now=0, limit=60) is None
    assert parse_retry_after(None, now=0, limit=60) is None


def test_delays_stay_within_half_and_all_of_the_bound() -> None:
    backoff = Backoff(base=0.5, factor=2, cap=30)
    for attempt in range(1, 12):
        bound = backoff.bound(attempt)
        assert bound == min(30, 0.5 * 2 ** (attempt - 1))
        assert backoff.delay(attempt, rand=lambda: 0.0) == bound / 2
        assert backoff.delay(attempt, rand=lambda: 1.0) == bound
    assert Backoff(cap=5).bound(10_000) == 5  # no overflow on huge attempt counts


def test_wechat_retry_policy_draws_from_the_same_backoff() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.2, max_delay=2.0)
    shared = Backoff(base=0.2, factor=2, cap=2.0)
    for retry in range(1, 6):
        assert policy.delay(retry, rand=lambda: 0.25) == shared.delay(retry, rand=lambda: 0.25)

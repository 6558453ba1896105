"""Token buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.ratelimit import TokenBucket


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(now=0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.5)
    assert not bucket.take(now=0.5)


def allowed(bucket: TokenBucket, now: float) -> int:
    """How many messages the bucket lets through at one instant."""
    for count in range(100_000):
        if not bucket.take(now=now):
            return count
    raise AssertionError("the bucket never ran out")


def emptied(rate: float, burst: float, now: float = 0.0) -> TokenBucket:
    bucket = TokenBucket(rate=rate, burst=burst, now=now)
    assert allowed(bucket, now) == burst
    return bucket


def test_forgiving_a_pause_allows_what_the_rate_allowed_over_it() -> None:
    bucket = emptied(rate=10, burst=5, now=100.0)
    bucket.forgive(2.0, now=100.0)
    assert allowed(bucket, 100.0) == 20


def test_the_credit_lasts_as_long_as_the_pause_then_expires() -> None:
    within = emptied(rate=10, burst=5, now=100.0)
    within.forgive(2.0, now=100.0)
    # Just before expiry: a full bucket again (5) and the whole credit (20).
    assert allowed(within, 101.99) == 5 + 20
    after = emptied(rate=10, burst=5, now=100.0)
    after.forgive(2.0, now=100.0)
    assert allowed(after, 102.0) == 5  # the bucket alone


def test_a_short_pause_is_forgiven_for_at_least_a_second() -> None:
    within = emptied(rate=10, burst=1)
    within.forgive(0.2, now=0.0)
    assert allowed(within, 0.95) == 1 + 2
    after = emptied(rate=10, burst=1)
    after.forgive(0.2, now=0.0)
    assert allowed(after, 1.0) == 1


def test_the_buckets_own_tokens_are_spent_before_the_credit() -> None:
    bucket = TokenBucket(rate=1, burst=3, now=0.0)
    bucket.forgive(10.0, now=0.0)
    assert all(bucket.take(now=0.0) for _ in range(3))  # from the full bucket
    # Had the credit paid for them, only 7 of it would be left here.
    assert allowed(bucket, 3.0) == 3 + 10


def test_credit_left_unused_does_not_carry_past_its_expiry() -> None:
    bucket = emptied(rate=10, burst=5)
    bucket.forgive(2.0, now=0.0)  # 20 until 2.0, never used
    bucket.forgive(1.0, now=5.0)  # 10 until 6.0, from nothing
    assert allowed(bucket, 5.0) == 5 + 10
    assert allowed(bucket, 5.5) == 5  # refilled tokens only: the credit is spent


def test_pauses_forgiven_within_the_credits_life_add_up() -> None:
    bucket = emptied(rate=10, burst=5)
    bucket.forgive(1.0, now=0.0)
    bucket.forgive(1.0, now=0.5)
    assert allowed(bucket, 0.5) == 5 + 20
    later = emptied(rate=10, burst=5)
    later.forgive(1.0, now=0.0)
    later.forgive(1.0, now=0.5)
    assert allowed(later, 1.5) == 5  # the later pause's window ended too


@pytest.mark.parametrize("seconds", [0.0, -1.0, -1e9])
def test_forgiving_no_pause_changes_nothing(seconds: float) -> None:
    bucket = emptied(rate=10, burst=5)
    bucket.forgive(seconds, now=0.0)
    assert allowed(bucket, 0.0) == 0
    assert allowed(bucket, 0.5) == 5


def test_forgiving_nothing_leaves_an_earlier_credit_as_it_was() -> None:
    bucket = emptied(rate=10, burst=5)
    bucket.forgive(1.0, now=0.0)
    bucket.forgive(0.0, now=0.9)
    assert allowed(bucket, 0.0) == 10
    assert allowed(bucket, 1.0) == 5  # still expired at 1.0, not extended


@given(
    rate=st.floats(0.5, 1000),
    seconds=st.floats(0.01, 60),
    burst=st.integers(1, 50),
)
def test_the_extra_allowance_is_about_rate_times_pause(
    rate: float, seconds: float, burst: int
) -> None:
    bucket = emptied(rate=rate, burst=burst)
    bucket.forgive(seconds, now=0.0)
    extra = allowed(bucket, 0.0)
    assert rate * seconds - 1 <= extra <= rate * seconds

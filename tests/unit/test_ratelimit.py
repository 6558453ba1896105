"""Token buckets."""

from __future__ import annotations

from tunnel_broker.ratelimit import TokenBucket


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(now=0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.5)
    assert not bucket.take(now=0.5)

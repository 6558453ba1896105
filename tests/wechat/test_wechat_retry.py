"""The retry policy's backoff arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel_broker.wechat import NO_RETRY, RetryPolicy


@settings(deadline=None)
@given(
    base=st.floats(0, 10),
    cap=st.floats(0, 60),
    retry_number=st.integers(1, 10_000),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_delay_stays_between_half_and_all_of_the_capped_exponential(
    base: float, cap: float, retry_number: int, rand: float
) -> None:
    policy = RetryPolicy(attempts=5, base_delay=base, max_delay=cap)
    ceiling = min(cap, base * 2.0 ** min(retry_number - 1, 60))
    delay = policy.delay(retry_number, rand=lambda: rand)
    assert ceiling / 2 <= delay <= ceiling


def test_delays_grow_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    highest = [policy.delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert highest == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    lowest = [policy.delay(n, rand=lambda: 0.0) for n in range(1, 4)]
    assert lowest == pytest.approx([0.05, 0.1, 0.2])


def test_no_retry_means_a_single_attempt() -> None:
    assert NO_RETRY.attempts == 1


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -0.5}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(0)

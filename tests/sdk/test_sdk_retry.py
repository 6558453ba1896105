"""Retries: what is resent, after how long, and what is never resent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from business_sdk import (
    ConnectError,
    RequestTimeoutError,
    RetryPolicy,
    ServiceUnavailableError,
    Target,
    TransportError,
)
from business_sdk._retry import parse_retry_after

OK_SEND = {"accepted": 1, "not_connected": []}


def request() -> httpx.Request:
    return httpx.Request("GET", "http://broker.test/")


async def test_connection_errors_are_retried_with_growing_jittered_backoff(api: Any) -> None:
    api.fake.reply(
        httpx.ConnectError("refused", request=request()),
        httpx.ConnectTimeout("slow", request=request()),
        httpx.Response(200, json=OK_SEND),
    )
    # Even a send: the broker never saw the first two attempts.
    result = await api.call("send", Target.all(), "x")
    assert result.accepted == 1
    assert len(api.fake.requests) == 3
    # rng is fixed at 0.5: half of base * 2**(n-1).
    assert api.fake.sleeps == pytest.approx([0.05, 0.1])


async def test_a_send_whose_answer_was_lost_is_not_resent(api: Any) -> None:
    api.fake.reply(httpx.ReadError("reset", request=request()))
    with pytest.raises(TransportError) as caught:
        await api.call("send", Target.all(), "x")
    assert len(api.fake.requests) == 1
    assert isinstance(caught.value.__cause__, httpx.ReadError)


async def test_a_send_that_timed_out_reading_is_not_resent(api: Any) -> None:
    api.fake.reply(httpx.ReadTimeout("slow", request=request()))
    with pytest.raises(RequestTimeoutError):
        await api.call("send", Target.all(), "x")
    assert len(api.fake.requests) == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadError("reset", request=request()),
        httpx.RemoteProtocolError("dropped", request=request()),
        httpx.ReadTimeout("slow", request=request()),
    ],
)
async def test_idempotent_calls_are_resent_after_a_lost_answer(api: Any, error: Exception) -> None:
    api.fake.reply(error, httpx.Response(200, json={"closed": True}))
    assert await api.call("close_tunnel", "tun_a") is True
    assert len(api.fake.requests) == 2


async def test_503_is_retried_for_every_call_and_retry_after_is_honoured(
    api: Any, problem: Any
) -> None:
    api.fake.reply(
        problem(503, "backend_unavailable", retry_after="2"),
        problem(503, "draining"),
        httpx.Response(200, json=OK_SEND),
    )
    assert (await api.call("send", Target.all(), "x")).accepted == 1
    first, second = api.fake.sleeps
    assert 2.0 <= first <= 2.1  # Retry-After plus a little jitter
    assert second == pytest.approx(0.1)  # backoff for the second retry


async def test_429_with_a_short_retry_after_is_waited_out(api: Any, problem: Any) -> None:
    api.fake.reply(problem(429, "rate_limited", retry_after="1"), httpx.Response(200, json=OK_SEND))
    assert (await api.call("send", Target.all(), "x")).accepted == 1
    assert api.fake.sleeps[0] >= 1.0


async def test_proxy_502_is_retried_only_for_idempotent_calls(api: Any) -> None:
    api.fake.reply(httpx.Response(502), httpx.Response(200, json={"closed": 1}))
    assert await api.call("close_user", "u") == 1
    api.fake.reply(httpx.Response(502))
    with pytest.raises(Exception, match="502"):
        await api.call("send", Target.all(), "x")
    assert len(api.fake.requests) == 3


async def test_giving_up_raises_the_sdk_error_from_the_httpx_one(api: Any) -> None:
    api.fake.reply(*[httpx.ConnectError("refused", request=request()) for _ in range(4)])
    with pytest.raises(ConnectError) as caught:
        await api.call("get_tunnel", "tun_a")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(api.fake.requests) == 4
    assert len(api.fake.sleeps) == 3


async def test_retries_can_be_switched_off(fake: Any, problem: Any) -> None:
    from business_sdk import SyncTunnelBroker

    client = SyncTunnelBroker(
        "http://broker.test",
        "k" * 20,
        retry=RetryPolicy(max_retries=0),
        http_client=httpx.Client(transport=httpx.MockTransport(fake.handler)),
    )
    fake.reply(problem(503, "draining"))
    with pytest.raises(ServiceUnavailableError):
        client.get_tunnel("t")
    assert len(fake.requests) == 1


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=3.0, rng=lambda: 1.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_has_full_jitter() -> None:
    low = RetryPolicy(rng=lambda: 0.0)
    assert low.backoff(3) == 0.0
    delays = {RetryPolicy().backoff(4) for _ in range(50)}
    assert len(delays) > 1
    assert all(0 <= d <= 2.0 for d in delays)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(header: str | None, expected: Any) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == expected

"""Errors carry the broker's problem details and land on the most precise exception class."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from business_sdk import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    FieldError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    Target,
    TunnelBrokerError,
    TunnelNotConnectedError,
    UnexpectedResponseError,
    ValidationFailedError,
)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "malformed_json", BadRequestError),
        (401, "missing_api_key", AuthenticationError),
        (401, "invalid_api_key", AuthenticationError),
        (404, "tunnel_not_connected", TunnelNotConnectedError),
        (404, "not_found", NotFoundError),
        (405, "method_not_allowed", ClientError),
        (413, "body_too_large", PayloadTooLargeError),
        (422, "validation_failed", ValidationFailedError),
        (500, "internal_error", ServerError),
        (409, "some_future_code", ClientError),
    ],
)
async def test_problem_details_map_to_typed_errors(
    api: Any, problem: Any, status: int, code: str, cls: type[APIError]
) -> None:
    api.fake.reply(problem(status, code, "what happened"))
    with pytest.raises(cls) as caught:
        await api.call("join", "lobby", "tun_a")
    error = caught.value
    assert type(error) is cls
    assert isinstance(error, TunnelBrokerError)
    assert (error.status, error.code, error.detail) == (status, code, "what happened")
    assert error.type == f"https://tunnel-broker.dev/problems/{code}"
    assert (error.method, error.path) == ("PUT", "/v1/groups/lobby/tunnels/tun_a")
    assert code in str(error) and "what happened" in str(error)


async def test_validation_errors_name_the_fields(api: Any, problem: Any) -> None:
    api.fake.reply(
        problem(
            422,
            "validation_failed",
            errors=[{"field": "messages.0.to", "message": "give exactly one target"}],
        )
    )
    with pytest.raises(ValidationFailedError) as caught:
        await api.call("send", Target.all(), "x")
    assert caught.value.errors == [FieldError("messages.0.to", "give exactly one target")]
    assert caught.value.problem["errors"][0]["field"] == "messages.0.to"


async def test_rate_limit_with_a_long_retry_after_is_raised_for_the_caller(
    api: Any, problem: Any
) -> None:
    api.fake.reply(problem(429, "rate_limited", retry_after="120"))
    with pytest.raises(RateLimitedError) as caught:
        await api.call("send", Target.all(), "x")
    assert caught.value.retry_after == 120.0
    assert caught.value.temporary
    assert api.fake.sleeps == []


async def test_a_proxy_error_page_still_gives_a_typed_error(api: Any) -> None:
    api.fake.reply(
        httpx.Response(404, text="<html>nginx</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(NotFoundError) as caught:
        await api.call("close_user", "u")
    assert caught.value.code is None
    assert caught.value.detail == "Not Found"
    assert caught.value.problem == {}


async def test_closing_a_tunnel_that_is_not_open_returns_false(api: Any, problem: Any) -> None:
    api.fake.reply(problem(404, "tunnel_not_connected"))
    assert await api.call("close_tunnel", "tun_gone") is False


async def test_presence_of_a_tunnel_that_is_not_open_is_none(api: Any, problem: Any) -> None:
    api.fake.reply(problem(404, "tunnel_not_connected"))
    assert await api.call("get_tunnel", "tun_gone") is None


async def test_other_404s_are_not_mistaken_for_a_closed_tunnel(api: Any, problem: Any) -> None:
    # A wrong base URL answers 404 not_found: that must not read as "tunnel not connected".
    api.fake.reply(problem(404, "not_found"))
    with pytest.raises(NotFoundError) as caught:
        await api.call("get_tunnel", "tun_a")
    assert not isinstance(caught.value, TunnelNotConnectedError)


async def test_joining_a_tunnel_that_is_not_open_raises(api: Any, problem: Any) -> None:
    api.fake.reply(problem(404, "tunnel_not_connected", "tunnel tun_x is not connected"))
    with pytest.raises(TunnelNotConnectedError, match="tun_x"):
        await api.call("join", "lobby", "tun_x")


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"accepted": "three"}', b'{"not_connected": []}', b'["a list"]'],
)
async def test_a_2xx_body_outside_the_contract_is_an_unexpected_response(
    api: Any, body: bytes
) -> None:
    api.fake.reply(httpx.Response(200, content=body))
    with pytest.raises(UnexpectedResponseError, match="/v1/messages"):
        await api.call("send", Target.all(), "x")


async def test_unavailable_after_all_retries_raises_service_unavailable(
    api: Any, problem: Any
) -> None:
    api.fake.reply(*[problem(503, "draining") for _ in range(4)])
    with pytest.raises(ServiceUnavailableError) as caught:
        await api.call("get_tunnel", "tun_a")
    assert caught.value.code == "draining"
    assert len(api.fake.requests) == 4

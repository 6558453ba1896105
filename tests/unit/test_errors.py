"""One exception hierarchy, whose base renders problem details."""

from __future__ import annotations

import pytest

from tunnel_broker import errors
from tunnel_broker.errors import (
    ERROR_TABLE,
    ApiError,
    BackendUnavailable,
    BrokerError,
    ConfigError,
)
from tunnel_broker.webhooks.signing import InvalidSecret, SignatureError


def _broker_exceptions() -> list[type[BaseException]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    return [*found, InvalidSecret, SignatureError]


def test_every_broker_exception_derives_from_the_base_and_has_a_known_code() -> None:
    for exc_type in _broker_exceptions():
        assert issubclass(exc_type, BrokerError), exc_type
        assert exc_type.code in ERROR_TABLE, exc_type


def test_the_base_renders_problem_details() -> None:
    problem = ConfigError("apps.toml: app a: id: invalid").problem()
    assert problem == {
        "type": "https://tunnel-broker.dev/problems/validation_failed",
        "title": ERROR_TABLE["validation_failed"].title,
        "status": 422,
        "detail": "apps.toml: app a: id: invalid",
        "code": "validation_failed",
    }


def test_backend_outages_show_a_public_detail_not_the_internal_one() -> None:
    problem = BackendUnavailable("redis at 10.0.0.7:6379 refused").problem()
    assert problem["status"] == 503
    assert "10.0.0.7" not in problem["detail"]


def test_api_errors_carry_any_code_extra_members_and_headers() -> None:
    error = ApiError.invalid("limit", "integer from 1 to 1000")
    assert error.problem()["errors"] == [{"field": "limit", "message": "integer from 1 to 1000"}]
    assert error.spec.status == 422
    limited = ApiError("rate_limited", "slow down", headers={"retry-after": "1"})
    assert limited.headers == {"retry-after": "1"}
    assert str(limited) == "rate_limited: slow down"
    with pytest.raises(KeyError):
        ApiError("no_such_code", "x")

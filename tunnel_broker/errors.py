"""Errors of the HTTP API, as RFC 9457 problem details with stable codes.

Every error a client can see is one row of ``ERROR_TABLE``: the ``code`` is stable API, the
``temporary`` flag tells clients (and the SDK's retry logic) whether retrying may help.
The docs' error list is generated from this table, so it cannot drift.

Exception tree::

    BrokerError                 any error with a problem-details rendering
    └── ApiError                raised by request handlers; carries an ErrorSpec
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    status: int
    title: str
    temporary: bool = False


def _table(*specs: ErrorSpec) -> dict[str, ErrorSpec]:
    return {spec.code: spec for spec in specs}


ERROR_TABLE: dict[str, ErrorSpec] = _table(
    ErrorSpec("malformed_json", 400, "Request body is not valid JSON"),
    ErrorSpec("missing_api_key", 401, "API key missing"),
    ErrorSpec("invalid_api_key", 401, "API key not recognised"),
    ErrorSpec("not_found", 404, "No such endpoint"),
    ErrorSpec("tunnel_not_connected", 404, "Tunnel is not connected"),
    ErrorSpec("method_not_allowed", 405, "Method not allowed"),
    ErrorSpec("body_too_large", 413, "Request body too large"),
    ErrorSpec("unsupported_media_type", 415, "Request body must be application/json"),
    ErrorSpec("validation_failed", 422, "Request does not match the schema"),
    ErrorSpec("session_not_found", 401, "Session unknown, expired or revoked"),
    ErrorSpec("wechat_invalid_code", 401, "WeChat login code invalid or already used"),
    ErrorSpec("invalid_user_data", 400, "WeChat user data failed verification"),
    ErrorSpec("session_tunnels_disabled", 403, "This app does not let clients open tunnels"),
    ErrorSpec("wechat_not_configured", 404, "This app has no WeChat login"),
    ErrorSpec("rate_limited", 429, "Too many requests for this app", temporary=True),
    ErrorSpec("wechat_rate_limited", 429, "WeChat refused: quota reached", temporary=True),
    ErrorSpec("wechat_error", 502, "WeChat answered unexpectedly"),
    ErrorSpec("wechat_misconfigured", 502, "WeChat rejected the app's appid or secret"),
    ErrorSpec("wechat_unavailable", 503, "WeChat is busy or unreachable", temporary=True),
    ErrorSpec("internal_error", 500, "Internal error", temporary=True),
    ErrorSpec("backend_unavailable", 503, "State backend unavailable", temporary=True),
)

PROBLEM_TYPE_BASE = "https://tunnel-broker.dev/problems/"


class BrokerError(Exception):
    """Base of every error the broker renders as problem details."""


@dataclass
class ApiError(BrokerError):
    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.detail}")

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self.code]

    def problem(self) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + spec.code,
            "title": spec.title,
            "status": spec.status,
            "detail": self.detail,
            "code": spec.code,
        }
        body.update(self.extra)
        return body

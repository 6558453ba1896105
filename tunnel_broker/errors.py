"""The broker's exceptions, and the table of error codes callers see.

Every error a client can see is one row of ``ERROR_TABLE``: the ``code`` is stable API, the
``temporary`` flag tells clients (and the SDK's retry logic) whether retrying may help.
The docs' error list is generated from this table, so it cannot drift.

Every exception the broker raises on purpose derives from ``BrokerError``, which renders
itself as RFC 9457 problem details: the HTTP layer maps the whole tree in one handler,
and a new exception only has to name its ``code``.

Exception tree::

    BrokerError                 renders as problem details with its ``code``
    ├── ApiError                raised by request handlers: any code, any detail
    ├── BackendUnavailable      the shared state cannot be reached (backend_unavailable)
    ├── TooManyTunnels          attach refused: the user is at the app's tunnel limit
    ├── TunnelQuotaExceeded     attach refused: the app is at its max_tunnels
    ├── MessageQuotaExceeded    pushes refused: the app used its message quota
    ├── TooManyGroups           join refused: the tunnel is at the app's group limit
    ├── ConfigError             settings or apps cannot be used (validation_failed)
    │   ├── SettingsError       a flag or TB_* variable
    │   └── AppsFileError       an apps file, or the apps stored in Redis
    ├── TokenError              a connect token is refused
    │   ├── TokenInvalid
    │   │   └── UnknownApp      refused before its signature is checked
    │   └── TokenExpired
    ├── WebhookHttpError        a webhook request failed before a complete answer
    │   └── BodyTooLarge
    └── ActionError             a webhook reply's action cannot be carried out
"""

from __future__ import annotations

from dataclasses import dataclass
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
    ErrorSpec("missing_admin_key", 401, "Operator key missing"),
    ErrorSpec("invalid_admin_key", 401, "Operator key not recognised"),
    ErrorSpec("admin_api_disabled", 404, "The admin API is off (no operator keys set)"),
    ErrorSpec("app_not_found", 404, "No such app"),
    ErrorSpec("app_exists", 409, "An app with this id exists"),
    ErrorSpec("app_in_apps_file", 409, "The app is managed by the apps file"),
    ErrorSpec("app_changed", 409, "The app changed meanwhile; retry", temporary=True),
    ErrorSpec("too_many_traces", 503, "Too many live traces on this node", temporary=True),
    ErrorSpec("tunnel_not_connected", 404, "Tunnel is not connected"),
    ErrorSpec("method_not_allowed", 405, "Method not allowed"),
    ErrorSpec("request_timeout", 408, "Request head not received in time", temporary=True),
    ErrorSpec("body_too_large", 413, "Request body too large"),
    ErrorSpec("uri_too_long", 414, "Request target too long"),
    ErrorSpec("unsupported_media_type", 415, "Request body must be application/json"),
    ErrorSpec("validation_failed", 422, "Request does not match the schema"),
    ErrorSpec("session_not_found", 401, "Session unknown, expired or revoked"),
    ErrorSpec("wechat_invalid_code", 401, "WeChat login code invalid or already used"),
    ErrorSpec("invalid_user_data", 400, "WeChat user data failed verification"),
    ErrorSpec("session_tunnels_disabled", 403, "This app does not let clients open tunnels"),
    ErrorSpec("wechat_not_configured", 404, "This app has no WeChat login"),
    ErrorSpec("rate_limited", 429, "Too many requests for this app", temporary=True),
    ErrorSpec("tunnel_quota_exceeded", 429, "The app has its max_tunnels open", temporary=True),
    ErrorSpec("message_quota_exceeded", 429, "The app used its message quota", temporary=True),
    ErrorSpec("headers_too_large", 431, "Request headers too large"),
    ErrorSpec("wechat_rate_limited", 429, "WeChat refused: quota reached", temporary=True),
    ErrorSpec("wechat_error", 502, "WeChat answered unexpectedly"),
    ErrorSpec("wechat_misconfigured", 502, "WeChat rejected the app's appid or secret"),
    ErrorSpec("wechat_unavailable", 503, "WeChat is busy or unreachable", temporary=True),
    ErrorSpec("internal_error", 500, "Internal error", temporary=True),
    ErrorSpec("backend_unavailable", 503, "State backend unavailable", temporary=True),
    ErrorSpec("too_many_connections", 503, "Connection limit reached", temporary=True),
)

PROBLEM_TYPE_BASE = "https://tunnel-broker.dev/problems/"


class BrokerError(Exception):
    """Base of every error the broker raises on purpose.

    ``detail`` is safe to log and to show: no key, secret or token is ever put in one.
    """

    code: str = "internal_error"
    # What callers are told instead of ``detail``, for errors whose detail is for the
    # operator's log only.
    public_detail: str | None = None

    def __init__(
        self,
        detail: str = "",
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self.code]

    def problem(self) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + spec.code,
            "title": spec.title,
            "status": spec.status,
            "detail": self.public_detail or self.detail,
            "code": spec.code,
        }
        body.update(self.extra)
        return body


class ApiError(BrokerError):
    """A request handler's refusal, with any code of ``ERROR_TABLE``."""

    def __init__(
        self,
        code: str,
        detail: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in ERROR_TABLE:
            raise KeyError(f"unknown error code {code!r}")
        super().__init__(detail, extra=extra, headers=headers)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"

    @classmethod
    def invalid(cls, field: str, message: str, detail: str | None = None) -> ApiError:
        """``validation_failed`` about one field, shaped like the schema's own errors."""
        return cls(
            "validation_failed",
            detail or f"{field}: {message}",
            {"errors": [{"field": field, "message": message}]},
        )


class BackendUnavailable(BrokerError):
    code = "backend_unavailable"
    public_detail = "the state backend cannot be reached; retry shortly"


class TooManyTunnels(BrokerError):
    """The user already holds the app's ``max_tunnels_per_user`` other tunnels."""

    code = "rate_limited"


class TunnelQuotaExceeded(BrokerError):
    """The app already has its ``max_tunnels`` open, all pods together."""

    code = "tunnel_quota_exceeded"


class MessageQuotaExceeded(BrokerError):
    """The messages would take the app beyond its ``message_quota`` for the period."""

    code = "message_quota_exceeded"


class TooManyGroups(BrokerError):
    """The tunnel is already in the app's ``max_groups_per_tunnel`` groups."""

    code = "validation_failed"


class ConfigError(BrokerError):
    code = "validation_failed"


class SettingsError(ConfigError):
    """A setting's value cannot be used; the message names the flag or variable."""


class AppsFileError(ConfigError):
    """Apps cannot be used; the message names the file, app and field."""


class TokenError(BrokerError):
    """A connect token is refused; messages carry nothing of the token."""


class TokenInvalid(TokenError):
    pass


class TokenExpired(TokenError):
    pass


class UnknownApp(TokenInvalid):
    """The token names an app this broker does not know."""


class WebhookHttpError(BrokerError):
    """A webhook request failed before a complete response arrived."""


class BodyTooLarge(WebhookHttpError):
    """The response exceeded a bound; ``status`` says whether it was a success."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ActionError(BrokerError):
    """A webhook action names something that is not there (an event, a tunnel)."""

    code = "validation_failed"

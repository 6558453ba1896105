"""Every error the SDK raises, as one hierarchy.

Callers catch as broadly or as narrowly as they need: ``TunnelBrokerError`` for "anything went
wrong with the broker", ``APIError`` for "the broker answered no" (with the problem-details
``code``, ``status`` and ``detail`` it sent), ``TransportError`` for "no answer at all".

Exception tree::

    TunnelBrokerError                   base of everything below
    ├── InvalidSecretError              a webhook secret is not whsec_ + base64 (also ValueError)
    ├── TransportError                  no HTTP answer, even after retries
    │   ├── ConnectError                could not connect (the request was never sent)
    │   └── RequestTimeoutError         connected, but no answer in time
    ├── APIError                        the broker answered with a problem-details error
    │   ├── ClientError                 4xx: the request itself needs changing
    │   │   ├── BadRequestError         400 malformed_json (and other 400s)
    │   │   ├── AuthenticationError     401 missing_api_key / invalid_api_key
    │   │   ├── NotFoundError           404
    │   │   │   └── TunnelNotConnectedError   404 tunnel_not_connected
    │   │   ├── PayloadTooLargeError    413 body_too_large
    │   │   ├── ValidationFailedError   422 validation_failed (.errors names the fields)
    │   │   └── RateLimitedError        429 rate_limited (.retry_after)
    │   └── ServerError                 5xx
    │       └── ServiceUnavailableError 503 draining / backend_unavailable
    ├── UnexpectedResponseError         a 2xx answer that does not match the contract
    └── WebhookError                    a webhook request this server should not act on
        ├── WebhookVerificationError    signature or timestamp check failed (answer 401)
        └── WebhookPayloadError         signed, but not a {"events": [...]} batch (answer 400)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class TunnelBrokerError(Exception):
    """Base class of every exception raised by ``business_sdk``."""


class InvalidSecretError(TunnelBrokerError, ValueError):
    """A webhook secret could not be decoded; raised at construction, never per request."""


# --------------------------------------------------------------------------- transport


class TransportError(TunnelBrokerError):
    """The broker could not be reached or did not answer; the ``__cause__`` is the httpx error."""


class ConnectError(TransportError):
    """No connection could be made, so the request was certainly not carried out."""


class RequestTimeoutError(TransportError):
    """A timeout after the request may have been sent: it may or may not have taken effect."""


# --------------------------------------------------------------------------- API answers


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of a 422 ``errors`` list: which request field, and what is wrong with it."""

    field: str
    message: str


class APIError(TunnelBrokerError):
    """The broker answered with an error status and (usually) an RFC 9457 problem body.

    ``code`` is the stable machine-readable reason (``"tunnel_not_connected"``, ...) and is what
    programs should switch on; ``detail`` is for humans and may change wording.
    """

    status: int
    code: str | None
    title: str | None
    detail: str | None
    type: str | None
    problem: Mapping[str, Any]
    retry_after: float | None
    method: str
    path: str

    def __init__(
        self,
        status: int,
        *,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        type: str | None = None,
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.type = type
        self.problem = dict(problem or {})
        self.retry_after = retry_after
        self.method = method
        self.path = path
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.code or 'error'}"
        if self.detail or self.title:
            text += f": {self.detail or self.title}"
        if self.method:
            text += f" ({self.method} {self.path})"
        return text

    @property
    def temporary(self) -> bool:
        """Whether the same request may succeed later (rate limits, restarts, outages)."""
        return self.status == 429 or self.status >= 500


class ClientError(APIError):
    """A 4xx answer: sending the same request again will fail the same way (except 429)."""


class BadRequestError(ClientError):
    """400: the request body is not valid JSON (``malformed_json``) or otherwise unusable."""


class AuthenticationError(ClientError):
    """401: the API key is missing (``missing_api_key``) or unknown (``invalid_api_key``)."""


class NotFoundError(ClientError):
    """404: the path names nothing (a wrong base URL often shows up as this)."""


class TunnelNotConnectedError(NotFoundError):
    """404 ``tunnel_not_connected``: the tunnel is not open now (never was, or closed)."""


class PayloadTooLargeError(ClientError):
    """413 ``body_too_large``: split the batch or shrink the messages."""


class ValidationFailedError(ClientError):
    """422 ``validation_failed``: ``errors`` says which fields the broker refused, and why."""

    @property
    def errors(self) -> list[FieldError]:
        raw = self.problem.get("errors")
        if not isinstance(raw, list):
            return []
        return [
            FieldError(str(item.get("field", "")), str(item.get("message", "")))
            for item in raw
            if isinstance(item, Mapping)
        ]


class RateLimitedError(ClientError):
    """429 ``rate_limited``: the app sent too much; ``retry_after`` says when to try again."""


class ServerError(APIError):
    """A 5xx answer: the broker (or a proxy before it) failed; the request may be retried."""


class ServiceUnavailableError(ServerError):
    """503 ``draining`` / ``backend_unavailable``: temporary; another attempt or pod may work."""


class UnexpectedResponseError(TunnelBrokerError):
    """A success status whose body the SDK cannot read: a broker/SDK version mismatch, or a
    proxy answering in the broker's place."""


# --------------------------------------------------------------------------- webhooks


class WebhookError(TunnelBrokerError):
    """A webhook request that must not be acted on; ``status`` is the HTTP answer to give."""

    status = 400
    code = "invalid_webhook"


class WebhookVerificationError(WebhookError):
    """The signature does not match any secret, a header is missing, or the timestamp is
    outside the tolerance (a replay, or a badly skewed clock)."""

    status = 401
    code = "invalid_signature"


class WebhookPayloadError(WebhookError):
    """The request is authentic but its body is not a ``{"events": [...]}`` batch."""

    status = 400
    code = "invalid_payload"


# --------------------------------------------------------------------------- mapping

_BY_CODE: dict[str, type[APIError]] = {
    "tunnel_not_connected": TunnelNotConnectedError,
    "validation_failed": ValidationFailedError,
    "rate_limited": RateLimitedError,
    "body_too_large": PayloadTooLargeError,
    "malformed_json": BadRequestError,
    "missing_api_key": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "draining": ServiceUnavailableError,
    "backend_unavailable": ServiceUnavailableError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: ValidationFailedError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_class(status: int, code: str | None) -> type[APIError]:
    """The most precise class for an answer: by ``code`` first (stable across statuses), then
    by status, then by status class, so unknown future codes still land somewhere sensible."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return ClientError
    if status >= 500:
        return ServerError
    return APIError

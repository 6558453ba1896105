"""What every API handler does first: find the node, authenticate the caller, charge its
budget, read and validate its body, parse paging arguments."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tunnel_broker.apps import App
from tunnel_broker.backend.base import Page
from tunnel_broker.errors import ApiError
from tunnel_broker.node import Node
from tunnel_broker.validation import field_errors

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Node, App], Awaitable[Response]]

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def authenticate(request: Request, node: Node) -> App:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    challenge = {"www-authenticate": "Bearer"}
    if not header:
        raise ApiError(
            "missing_api_key", "send 'Authorization: Bearer <api key>'", headers=challenge
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            "invalid_api_key",
            "the Authorization header must use the Bearer scheme",
            headers=challenge,
        )
    app = node.apps.by_api_key(key.strip())
    if app is None:
        raise ApiError("invalid_api_key", "no app has this API key", headers=challenge)
    charge_request(node, app)
    return app


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        node = node_of(request)
        return await handler(request, node, authenticate(request, node))

    endpoint.__name__ = handler.__name__
    return endpoint


def charge_request(node: Node, app: App) -> None:
    """Spend one request of the app's budget (API calls, logins, session tunnels)."""
    exhausted = node.api_allowed(app)
    if exhausted is not None:
        wait = max(1, int(exhausted.seconds_until_token() + 0.999))
        raise ApiError(
            "rate_limited",
            f"app {app.id} exceeded {app.limits.api_requests_per_second:g} requests/s",
            headers={"retry-after": str(wait)},
        )


async def read_json(request: Request, node: Node, optional: bool = False) -> Any:
    limit = node.settings.max_api_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("body_too_large", f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("body_too_large", f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        if optional:
            return None
        raise ApiError("malformed_json", "a JSON request body is required")
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError("unsupported_media_type", f"got content-type {media!r}")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("malformed_json", f"body is not valid JSON: {exc}") from None


def parse_body(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        named = ", ".join(e["field"] for e in errors[:5])
        raise ApiError(
            "validation_failed", f"invalid field(s): {named}", {"errors": errors}
        ) from None


def page_args(request: Request) -> tuple[str | None, int]:
    raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ApiError.invalid(
            "limit",
            f"integer from 1 to {MAX_PAGE}",
            f"limit must be an integer from 1 to {MAX_PAGE}",
        )
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            cursor = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, ValueError):
            raise ApiError.invalid(
                "cursor", "invalid cursor", "cursor is not one this API returned"
            ) from None
    return cursor or None, int(raw_limit)


def page_json(page: Page) -> dict[str, Any]:
    cursor = page.next_cursor
    return {
        "tunnels": [r.to_json() for r in page.records],
        "next_cursor": base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
        if cursor
        else None,
    }

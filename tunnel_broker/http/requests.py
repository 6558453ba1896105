"""What every API handler does first: find the node, authenticate the caller, charge its
budget, read and validate its body, parse paging arguments."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tunnel_broker.apps import App
from tunnel_broker.backend.base import Page
from tunnel_broker.errors import ApiError
from tunnel_broker.node import Node
from tunnel_broker.ratelimit import TokenBucket
from tunnel_broker.shapes import check_id, is_unicode
from tunnel_broker.validation import field_errors

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Node, App], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_JSON_DEPTH = 32


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
    node.usage.of(app.id).api_calls += 1  # usage metering: calls served, not refused ones
    return app


def authenticated(handler: Handler) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        node = node_of(request)
        return await handler(request, node, authenticate(request, node))

    endpoint.__name__ = handler.__name__
    return endpoint


def charge_request(node: Node, app: App) -> None:
    """Spend one request of the app's API budget (API calls, session tunnels)."""
    limits = app.limits
    exhausted = node.api_budgets.spend(app.id, limits.api_requests_per_second, limits.api_burst)
    if exhausted is not None:
        _refuse(exhausted, f"app {app.id} exceeded {limits.api_requests_per_second:g} requests/s")


def charge_login(request: Request, node: Node, app: App) -> None:
    """Spend one login of the app's login budget and of the client address's: anybody
    may try to log in, and junk logins must not starve the business server's API calls,
    nor one address everybody else's logins."""
    limits = app.limits
    client = request.client.host if request.client is not None else "unknown"
    exhausted = node.client_login_budgets.spend(
        f"{app.id}\x00{client}",
        limits.login_requests_per_second_per_client,
        limits.login_burst_per_client,
    )
    if exhausted is not None:
        _refuse(exhausted, "too many logins from this address; retry later")
    exhausted = node.login_budgets.spend(
        app.id, limits.login_requests_per_second, limits.login_burst
    )
    if exhausted is not None:
        _refuse(exhausted, f"app {app.id} exceeded {limits.login_requests_per_second:g} logins/s")


def _refuse(bucket: TokenBucket, detail: str) -> NoReturn:
    wait = max(1, int(bucket.seconds_until_token() + 0.999))
    raise ApiError("rate_limited", detail, headers={"retry-after": str(wait)})


async def read_body(request: Request, node: Node) -> bytes:
    """The request body, read only up to ``max_api_body_bytes`` (``body_too_large``)."""
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
    return b"".join(chunks)


async def read_json(request: Request, node: Node, optional: bool = False) -> Any:
    body = await read_body(request, node)
    if not body.strip():
        if optional:
            return None
        raise ApiError("malformed_json", "a JSON request body is required")
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError("unsupported_media_type", f"got content-type {media!r}")
    try:
        value = json.loads(body)
    except RecursionError:
        raise ApiError("malformed_json", "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("malformed_json", f"body is not valid JSON: {exc}") from None
    _check_json(value)
    return value


def _check_json(value: Any) -> None:
    """Refuse what JSON allows but the broker cannot carry: nesting deeper than
    ``MAX_JSON_DEPTH`` (identity and meta travel in tokens and webhooks) and strings with
    lone surrogates (``"\\udc00"`` decodes, but can be neither sent nor signed)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not is_unicode(item):
                raise ApiError.invalid("(body)", "a string holds a lone surrogate (\\udXXX)")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ApiError.invalid("(body)", f"nested more than {MAX_JSON_DEPTH} levels deep")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def parse_body(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        named = ", ".join(e["field"] for e in errors[:5])
        raise ApiError(
            "validation_failed", f"invalid field(s): {named}", {"errors": errors}
        ) from None


def path_id(request: Request, name: str) -> str:
    """A tunnel id, user id or group name from the path, held to the rules of ids in
    bodies (a group named in a path must be one a push can name too)."""
    value: str = request.path_params[name]
    try:
        return check_id(value)
    except ValueError as exc:
        raise ApiError.invalid(name, str(exc), f"{name} is not a valid id") from None


def limit_arg(request: Request, default: int, maximum: int) -> int:
    """The ``limit`` query parameter: an integer from 1 to ``maximum``."""
    raw = request.query_params.get("limit", str(default))
    # isascii: "²".isdigit() is true, and int() refuses it; the length bounds int().
    if not (len(raw) <= 10 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum):
        raise ApiError.invalid(
            "limit",
            f"integer from 1 to {maximum}",
            f"limit must be an integer from 1 to {maximum}",
        )
    return int(raw)


def page_args(request: Request) -> tuple[str | None, int]:
    limit = limit_arg(request, DEFAULT_PAGE, MAX_PAGE)
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            cursor = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, ValueError):
            raise ApiError.invalid(
                "cursor", "invalid cursor", "cursor is not one this API returned"
            ) from None
    return cursor or None, limit


def page_json(page: Page) -> dict[str, Any]:
    cursor = page.next_cursor
    return {
        "tunnels": [r.to_json() for r in page.records],
        "next_cursor": base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
        if cursor
        else None,
    }

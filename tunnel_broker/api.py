"""The business-server HTTP API (``/v1/...``, Bearer API key) and operations endpoints.

Handlers are thin: authenticate, parse with the schemas, call the backend, shape the
answer. Every failure leaves as problem details built from ``errors.ERROR_TABLE``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.backend.base import Page
from tunnel_broker.errors import ApiError
from tunnel_broker.events import iso_time
from tunnel_broker.metrics import CONTENT_TYPE
from tunnel_broker.node import Node
from tunnel_broker.openapi import openapi_document
from tunnel_broker.schemas import (
    CloseRequest,
    CreateTunnelRequest,
    MessagesRequest,
)
from tunnel_broker.targets import Target
from tunnel_broker.tokens import ConnectClaims

logger = logging.getLogger("tunnel_broker.api")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Node, App], Awaitable[Response]]

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def problem_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error.problem(),
        status_code=error.spec.status,
        media_type="application/problem+json",
        headers=error.headers or None,
    )


def _validation_error(exc: ValidationError) -> ApiError:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_input=False, include_url=False)
    ]
    named = ", ".join(e["field"] for e in errors[:5])
    return ApiError("validation_failed", f"invalid field(s): {named}", {"errors": errors})


def authenticate(request: Request, node: Node) -> App:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise ApiError(
            "missing_api_key",
            "send 'Authorization: Bearer <api key>'",
            headers={"www-authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            "invalid_api_key",
            "the Authorization header must use the Bearer scheme",
            headers={"www-authenticate": "Bearer"},
        )
    app = node.apps.by_api_key(key.strip())
    if app is None:
        raise ApiError(
            "invalid_api_key", "no app has this API key", headers={"www-authenticate": "Bearer"}
        )
    charge_request(node, app)
    return app


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
        raise _validation_error(exc) from None


def _not_connected(tunnel_id: str) -> ApiError:
    return ApiError("tunnel_not_connected", f"tunnel {tunnel_id} is not connected")


def _page_args(request: Request) -> tuple[str | None, int]:
    raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ApiError(
            "validation_failed",
            f"limit must be an integer from 1 to {MAX_PAGE}",
            {"errors": [{"field": "limit", "message": f"integer from 1 to {MAX_PAGE}"}]},
        )
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            cursor = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, ValueError):
            raise ApiError(
                "validation_failed",
                "cursor is not one this API returned",
                {"errors": [{"field": "cursor", "message": "invalid cursor"}]},
            ) from None
    return cursor or None, int(raw_limit)


def _page_json(page: Page) -> dict[str, Any]:
    cursor = page.next_cursor
    return {
        "tunnels": [r.to_json() for r in page.records],
        "next_cursor": base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
        if cursor
        else None,
    }


# ---- handlers ------------------------------------------------------------------------


async def create_tunnel(request: Request, node: Node, app: App) -> Response:
    body = parse_body(CreateTunnelRequest, await read_json(request, node))
    return mint_tunnel(node, app, body)


def mint_tunnel(node: Node, app: App, body: CreateTunnelRequest) -> Response:
    """Check a tunnel request against the app's limits and answer with its connect URL."""
    limits = app.limits
    ttl = body.ttl or limits.default_tunnel_ttl_seconds
    if ttl > limits.max_tunnel_ttl_seconds:
        raise ApiError(
            "validation_failed",
            f"ttl is above this app's maximum of {limits.max_tunnel_ttl_seconds}s",
            {"errors": [{"field": "ttl", "message": "above the app's max_tunnel_ttl_seconds"}]},
        )
    if len(body.groups) > limits.max_groups_per_tunnel:
        raise ApiError(
            "validation_failed",
            f"at most {limits.max_groups_per_tunnel} groups per tunnel",
            {"errors": [{"field": "groups", "message": "too many groups"}]},
        )
    claims_size = len(json.dumps([body.identity, body.meta, body.groups], separators=(",", ":")))
    if claims_size > limits.max_token_claims_bytes:
        raise ApiError(
            "validation_failed",
            f"identity, meta and groups together exceed {limits.max_token_claims_bytes} bytes",
            {"errors": [{"field": "identity", "message": "identity/meta/groups too large"}]},
        )
    expires_at = int(time.time()) + ttl
    tunnel_id = "tun_" + secrets.token_urlsafe(16)
    claims = ConnectClaims(
        app.id, tunnel_id, body.user_id, expires_at, body.identity, body.meta, tuple(body.groups)
    )
    token = node.tokens.mint(claims)
    connect_url = f"{node.settings.connect_base_url}/v1/connect?token={token}"
    return JSONResponse(
        {"tunnel_id": tunnel_id, "connect_url": connect_url, "expires_at": iso_time(expires_at)},
        status_code=201,
    )


async def send_messages(request: Request, node: Node, app: App) -> Response:
    body = parse_body(MessagesRequest, await read_json(request, node))
    max_bytes = app.limits.max_message_bytes
    for index, message in enumerate(body.messages):
        size = len(message.data.encode()) if message.data is not None else None
        if size is None:
            size = len(message.payload())
        if size > max_bytes:
            raise ApiError(
                "validation_failed",
                f"messages.{index} exceeds max_message_bytes ({max_bytes})",
                {"errors": [{"field": f"messages.{index}.data", "message": "too large"}]},
            )
    not_connected: list[str] = []
    for message in body.messages:
        not_connected.extend(
            await node.backend.deliver(app.id, message.to.to_target(), message.payload())
        )
    return JSONResponse(
        {"accepted": len(body.messages), "not_connected": list(dict.fromkeys(not_connected))}
    )


async def _close_args(request: Request, node: Node) -> tuple[int, str]:
    raw = await read_json(request, node, optional=True)
    body = parse_body(CloseRequest, raw if raw is not None else {})
    return body.code if body.code is not None else 1000, body.reason or "closed_by_business"


async def close_tunnel(request: Request, node: Node, app: App) -> Response:
    tunnel_id = request.path_params["tunnel_id"]
    code, reason = await _close_args(request, node)
    closed = await node.backend.close(app.id, Target.tunnel(tunnel_id), code, reason)
    if not closed:
        raise _not_connected(tunnel_id)
    return JSONResponse({"closed": True})


async def close_user(request: Request, node: Node, app: App) -> Response:
    code, reason = await _close_args(request, node)
    target = Target("users", (request.path_params["user_id"],))
    return JSONResponse({"closed": await node.backend.close(app.id, target, code, reason)})


async def get_tunnel(request: Request, node: Node, app: App) -> Response:
    tunnel_id = request.path_params["tunnel_id"]
    record = await node.backend.get(app.id, tunnel_id)
    if record is None:
        raise _not_connected(tunnel_id)
    return JSONResponse(record.to_json())


async def user_tunnels(request: Request, node: Node, app: App) -> Response:
    cursor, limit = _page_args(request)
    page = await node.backend.list_user(app.id, request.path_params["user_id"], cursor, limit)
    return JSONResponse(_page_json(page))


async def group_tunnels(request: Request, node: Node, app: App) -> Response:
    cursor, limit = _page_args(request)
    page = await node.backend.list_group(app.id, request.path_params["group"], cursor, limit)
    return JSONResponse(_page_json(page))


async def join_group(request: Request, node: Node, app: App) -> Response:
    group, tunnel_id = request.path_params["group"], request.path_params["tunnel_id"]
    record = await node.backend.get(app.id, tunnel_id)
    if (
        record is not None
        and group not in record.groups
        and len(record.groups) >= app.limits.max_groups_per_tunnel
    ):
        raise ApiError(
            "validation_failed",
            f"tunnel is already in {app.limits.max_groups_per_tunnel} groups",
            {"errors": [{"field": "group", "message": "too many groups for this tunnel"}]},
        )
    if not await node.backend.join(app.id, tunnel_id, group):
        raise _not_connected(tunnel_id)
    return JSONResponse({"group": group, "tunnel_id": tunnel_id, "joined": True})


async def leave_group(request: Request, node: Node, app: App) -> Response:
    group, tunnel_id = request.path_params["group"], request.path_params["tunnel_id"]
    if not await node.backend.leave(app.id, tunnel_id, group):
        raise _not_connected(tunnel_id)
    return JSONResponse({"group": group, "tunnel_id": tunnel_id, "left": True})


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        node: Node = request.app.state.node
        return await handler(request, node, authenticate(request, node))

    endpoint.__name__ = handler.__name__
    return endpoint


# ---- operations ----------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    node: Node = request.app.state.node
    if node.ready():
        return JSONResponse({"status": "ready"})
    why = "draining" if node.draining else "starting" if not node.started else "backend_unavailable"
    return JSONResponse({"status": "unready", "reason": why}, status_code=503)


async def metrics(request: Request) -> Response:
    node: Node = request.app.state.node
    return Response(node.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    node: Node = request.app.state.node
    return JSONResponse(openapi_document(node.settings.public_url))


routes = [
    Route("/v1/tunnels/{tunnel_id}", authenticated(get_tunnel), methods=["GET"]),
    Route("/v1/tunnels/{tunnel_id}", authenticated(close_tunnel), methods=["DELETE"]),
    Route("/v1/messages", authenticated(send_messages), methods=["POST"]),
    Route("/v1/users/{user_id}/close", authenticated(close_user), methods=["POST"]),
    Route("/v1/users/{user_id}/tunnels", authenticated(user_tunnels), methods=["GET"]),
    Route("/v1/groups/{group}/tunnels", authenticated(group_tunnels), methods=["GET"]),
    Route("/v1/groups/{group}/tunnels/{tunnel_id}", authenticated(join_group), methods=["PUT"]),
    Route("/v1/groups/{group}/tunnels/{tunnel_id}", authenticated(leave_group), methods=["DELETE"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(exc)


async def backend_unavailable_handler(request: Request, exc: Exception) -> Response:
    # Every handler that touches shared state can meet this; it is mapped here, once.
    return problem_response(
        ApiError("backend_unavailable", "the state backend cannot be reached; retry shortly")
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem_response(
            ApiError("method_not_allowed", f"{request.method} is not allowed here")
        )
    return problem_response(ApiError("not_found", f"no endpoint at {request.url.path}"))


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem_response(ApiError("internal_error", "the broker failed; retry later"))

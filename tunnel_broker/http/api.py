"""The business-server HTTP API (``/v1/...``, Bearer API key): tunnels, pushes, groups and
presence.

Handlers are thin: authenticate, parse with the schemas, call the backend, shape the
answer. Every failure leaves as problem details (``problems.py``); every answer to an app
near a quota carries ``tb-quota-warning`` (``quota_warning.py``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.errors import ApiError, MessageQuotaExceeded, TooManyGroups
from tunnel_broker.http.connect_urls import check_tunnel_quota, mint_tunnel
from tunnel_broker.http.login import SKEY_HEADER, create_session_tunnel
from tunnel_broker.http.quota_warning import app_endpoint
from tunnel_broker.http.requests import (
    node_of,
    page_args,
    page_json,
    parse_body,
    path_id,
    read_json,
)
from tunnel_broker.http.schemas import CloseRequest, CreateTunnelRequest, MessagesRequest
from tunnel_broker.node import Node
from tunnel_broker.targets import Target
from tunnel_broker.usage.pushes import count_push


def _not_connected(tunnel_id: str) -> ApiError:
    return ApiError("tunnel_not_connected", f"tunnel {tunnel_id} is not connected")


async def _create_tunnel(request: Request, node: Node, app: App) -> Response:
    body = parse_body(CreateTunnelRequest, await read_json(request, node))
    await check_tunnel_quota(node, app)
    return mint_tunnel(node, app, body)


_api_create_tunnel = app_endpoint(_create_tunnel)


async def create_tunnel(request: Request) -> Response:
    """``POST /v1/tunnels``: a business server's API key, or a mini-program's session."""
    if SKEY_HEADER in request.headers and "authorization" not in request.headers:
        return await create_session_tunnel(request, node_of(request))
    return await _api_create_tunnel(request)


async def send_messages(request: Request, node: Node, app: App) -> Response:
    body = parse_body(MessagesRequest, await read_json(request, node))
    max_bytes = app.limits.max_message_bytes
    for index, message in enumerate(body.messages):
        size = len(message.data.encode()) if message.data is not None else None
        if size is None:
            size = len(message.payload())
        if size > max_bytes:
            raise ApiError.invalid(
                f"messages.{index}.data",
                "too large",
                f"messages.{index} exceeds max_message_bytes ({max_bytes})",
            )
    if app.limits.message_quota is not None:  # all of them, or none
        try:
            await node.backend.quotas.acquire(app.id, app.limits, len(body.messages))
        except MessageQuotaExceeded:
            node.metrics.quota_refusals.labels(app.id, "messages").inc()
            raise
    counters = node.usage.of(app.id)
    not_connected: list[str] = []
    for message in body.messages:
        target, payload = message.to.to_target(), message.payload()
        not_connected.extend(await node.backend.push(app.id, target, payload))
        count_push(counters, app.id, target, payload, "api")
    return JSONResponse(
        {"accepted": len(body.messages), "not_connected": list(dict.fromkeys(not_connected))}
    )


async def _close_args(request: Request, node: Node) -> tuple[int, str]:
    raw = await read_json(request, node, optional=True)
    body = parse_body(CloseRequest, raw if raw is not None else {})
    return body.code if body.code is not None else 1000, body.reason or "closed_by_business"


async def close_tunnel(request: Request, node: Node, app: App) -> Response:
    tunnel_id = path_id(request, "tunnel_id")
    code, reason = await _close_args(request, node)
    closed = await node.backend.close(app.id, Target.tunnel(tunnel_id), code, reason)
    if not closed:
        raise _not_connected(tunnel_id)
    return JSONResponse({"closed": True})


async def close_user(request: Request, node: Node, app: App) -> Response:
    code, reason = await _close_args(request, node)
    target = Target("users", (path_id(request, "user_id"),))
    return JSONResponse({"closed": await node.backend.close(app.id, target, code, reason)})


async def get_tunnel(request: Request, node: Node, app: App) -> Response:
    tunnel_id = path_id(request, "tunnel_id")
    record = await node.backend.get(app.id, tunnel_id)
    if record is None:
        raise _not_connected(tunnel_id)
    return JSONResponse(record.to_json())


async def user_tunnels(request: Request, node: Node, app: App) -> Response:
    cursor, limit = page_args(request)
    page = await node.backend.list_user(app.id, path_id(request, "user_id"), cursor, limit)
    return JSONResponse(page_json(page))


async def app_tunnels(request: Request, node: Node, app: App) -> Response:
    """``GET /v1/tunnels``: every tunnel of the app, all pods, a page at a time."""
    cursor, limit = page_args(request)
    page = await node.backend.list_app(app.id, cursor, limit)
    return JSONResponse(page_json(page))


async def group_tunnels(request: Request, node: Node, app: App) -> Response:
    cursor, limit = page_args(request)
    page = await node.backend.list_group(app.id, path_id(request, "group"), cursor, limit)
    return JSONResponse(page_json(page))


async def join_group(request: Request, node: Node, app: App) -> Response:
    group, tunnel_id = path_id(request, "group"), path_id(request, "tunnel_id")
    limit = app.limits.max_groups_per_tunnel
    try:
        joined = await node.backend.join(app.id, tunnel_id, group, limit)
    except TooManyGroups:
        raise ApiError.invalid(
            "group", "too many groups for this tunnel", f"tunnel is already in {limit} groups"
        ) from None
    if not joined:
        raise _not_connected(tunnel_id)
    return JSONResponse({"group": group, "tunnel_id": tunnel_id, "joined": True})


async def leave_group(request: Request, node: Node, app: App) -> Response:
    group, tunnel_id = path_id(request, "group"), path_id(request, "tunnel_id")
    if not await node.backend.leave(app.id, tunnel_id, group):
        raise _not_connected(tunnel_id)
    return JSONResponse({"group": group, "tunnel_id": tunnel_id, "left": True})


routes = [
    Route("/v1/tunnels", create_tunnel, methods=["POST"]),
    Route("/v1/tunnels", app_endpoint(app_tunnels), methods=["GET"]),
    Route("/v1/tunnels/{tunnel_id}", app_endpoint(get_tunnel), methods=["GET"]),
    Route("/v1/tunnels/{tunnel_id}", app_endpoint(close_tunnel), methods=["DELETE"]),
    Route("/v1/messages", app_endpoint(send_messages), methods=["POST"]),
    Route("/v1/users/{user_id}/close", app_endpoint(close_user), methods=["POST"]),
    Route("/v1/users/{user_id}/tunnels", app_endpoint(user_tunnels), methods=["GET"]),
    Route("/v1/groups/{group}/tunnels", app_endpoint(group_tunnels), methods=["GET"]),
    Route("/v1/groups/{group}/tunnels/{tunnel_id}", app_endpoint(join_group), methods=["PUT"]),
    Route("/v1/groups/{group}/tunnels/{tunnel_id}", app_endpoint(leave_group), methods=["DELETE"]),
]

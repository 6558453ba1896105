"""The ASGI application: WebSocket connects go straight to the tunnel handler, HTTP
through Starlette's endpoints.

The calls a business server makes per tunnel and per push (``POST /v1/tunnels``,
``POST /v1/messages``: every route at a fixed path) go straight to their endpoint, past
Starlette's middleware and router: they were a fifth of the broker's CPU per tunnel set
up (``bench/broker_bench.py --memory``, docs/performance.md). The endpoints, and the
problem details of their errors, are the same either way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tunnel_broker import console
from tunnel_broker.errors import BrokerError
from tunnel_broker.http import (
    admin,
    admin_usage,
    api,
    login,
    ops,
    self_service,
    trace,
    usage,
    wafer_api,
    wafer_auth,
)
from tunnel_broker.http.problems import (
    EXCEPTION_HANDLERS,
    internal_error_handler,
    problem_response,
)
from tunnel_broker.node import Node
from tunnel_broker.tunnels.connect import ConnectHandler, Receive, Scope, Send
from tunnel_broker.tunnels.wafer_connect import WaferConnectHandler

CONNECT_PATH = "/v1/connect"
ROUTES = (
    api.routes
    + self_service.routes
    + trace.routes
    + usage.routes
    + login.routes
    + ops.routes
    + wafer_api.routes
    + wafer_auth.routes
    + admin.routes
    + admin_usage.routes
    + console.routes
)
Endpoint = Callable[[Request], Awaitable[Response]]


class BrokerApp:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.connect = ConnectHandler(node)
        self.wafer_connect = WaferConnectHandler(node)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await node.start()
            try:
                yield
            finally:
                await node.stop()

        self.http = Starlette(
            routes=ROUTES,
            exception_handlers=EXCEPTION_HANDLERS,
            lifespan=lifespan,
        )
        self.http.state.node = node
        self.direct: dict[tuple[str, str], Endpoint] = {
            (method, route.path): route.endpoint
            for route in ROUTES
            if isinstance(route, Route) and "{" not in route.path
            for method in route.methods or ()
            if method != "HEAD"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if scope["path"] == CONNECT_PATH:
                await self.connect(scope, receive, send)
            elif scope["path"] == wafer_api.WAFER_CONNECT_PATH:
                await self.wafer_connect(scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008, "reason": "no such endpoint"})
            return
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.http(scope, receive, send)
            return
        counter = self.node.metrics.api_requests

        async def counting_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                counter.labels(str(message["status"])).inc()
            await send(message)

        endpoint = self.direct.get((scope["method"], scope["path"]))
        if endpoint is None:
            await self.http(scope, receive, counting_send)
            return
        scope["app"] = self.http  # what ``request.app`` is under Starlette
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except BrokerError as exc:
            response = problem_response(exc)
        except Exception as exc:
            response = await internal_error_handler(request, exc)
        await response(scope, receive, counting_send)

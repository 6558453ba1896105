"""The ASGI application: WebSocket connects go straight to the tunnel handler, all
HTTP goes through Starlette."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from tunnel_broker import login
from tunnel_broker.api import (
    api_error_handler,
    backend_unavailable_handler,
    http_error_handler,
    internal_error_handler,
    routes,
)
from tunnel_broker.backend.base import BackendUnavailable
from tunnel_broker.connect import ConnectHandler, Receive, Scope, Send
from tunnel_broker.errors import ApiError
from tunnel_broker.node import Node

CONNECT_PATH = "/v1/connect"
# Login routes first: they also take POST /v1/tunnels made with a session.
ROUTES = login.routes + routes


class BrokerApp:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.connect = ConnectHandler(node)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await node.start()
            try:
                yield
            finally:
                await node.stop()

        self.http = Starlette(
            routes=ROUTES,
            exception_handlers={
                ApiError: api_error_handler,
                BackendUnavailable: backend_unavailable_handler,
                HTTPException: http_error_handler,
                Exception: internal_error_handler,
            },
            lifespan=lifespan,
        )
        self.http.state.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if scope["path"] == CONNECT_PATH:
                await self.connect(scope, receive, send)
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

        await self.http(scope, receive, counting_send)

"""The ASGI application: WebSocket connects go straight to the tunnel handler, all
HTTP goes through Starlette."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from starlette.applications import Starlette

from tunnel_broker.http import api, login, ops, wafer_api, wafer_auth
from tunnel_broker.http.problems import EXCEPTION_HANDLERS
from tunnel_broker.node import Node
from tunnel_broker.tunnels.connect import ConnectHandler, Receive, Scope, Send
from tunnel_broker.tunnels.wafer_connect import WaferConnectHandler

CONNECT_PATH = "/v1/connect"
ROUTES = api.routes + login.routes + ops.routes + wafer_api.routes + wafer_auth.routes


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

        await self.http(scope, receive, counting_send)

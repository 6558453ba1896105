"""An in-process broker for end-to-end tests, with an API client per app."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.servers import free_port
from tests.support.waiting import scaled
from tunnel_broker.apps import App, parse_apps
from tunnel_broker.config import Secret, Settings
from tunnel_broker.node import Node
from tunnel_broker.server import running


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def app_config(app_id: str, webhook_url: str, secret: str, **limits: Any) -> dict[str, Any]:
    return {
        "id": app_id,
        "api_keys": [f"tbk_{app_id}_" + os.urandom(12).hex()],
        "webhook_url": webhook_url,
        "webhook_secrets": [secret],
        "limits": limits,
    }


@dataclass
class AppClient:
    """The business server's view: API calls with one app's key."""

    app: App
    http: httpx.AsyncClient

    async def issue(self, user_id: str, **body: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/tunnels", json={"user_id": user_id, **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def send(
        self, to: dict[str, Any], data: str | None = None, **extra: Any
    ) -> httpx.Response:
        message: dict[str, Any] = {"to": to, **extra}
        if data is not None:
            message["data"] = data
        return await self.http.post("/v1/messages", json={"messages": [message]})


@dataclass
class BrokerHandle:
    node: Node
    url: str
    clients: dict[str, AppClient]

    def client(self, app_id: str) -> AppClient:
        return self.clients[app_id]

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


@contextlib.asynccontextmanager
async def run_broker(
    app_configs: list[dict[str, Any]], **settings: Any
) -> AsyncIterator[BrokerHandle]:
    port = free_port()
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "secret_key": Secret("test-secret-key-0123456789"),
        "drain_seconds": 0.5,
        "shutdown_flush_seconds": 5.0,
        "sweep_interval": 0.2,
        "webhook_retry_max_delay": 1.0,
        "handover_file": "",
    }
    defaults.update(settings)
    apps = parse_apps(app_configs)
    async with running(Settings(**defaults), apps) as (node, _server):
        url = f"http://127.0.0.1:{port}"
        clients = {}
        for app in apps:
            http = httpx.AsyncClient(
                base_url=url, headers={"authorization": f"Bearer {app.api_keys[0]}"}
            )
            clients[app.id] = AppClient(app, http)
        try:
            yield BrokerHandle(node, url, clients)
        finally:
            for c in clients.values():
                await c.http.aclose()


async def closed_with(ws: ClientConnection, seconds: float = 5.0) -> tuple[int, str]:
    """The code and reason of the close frame that ends ``ws`` (what arrives before it
    is read and dropped)."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            await asyncio.wait_for(ws.recv(), scaled(seconds))
    rcvd = info.value.rcvd
    assert rcvd is not None, "the broker closed without a close frame"
    return rcvd.code, rcvd.reason


@contextlib.asynccontextmanager
async def open_tunnel(connect_url: str) -> AsyncIterator[ClientConnection]:
    async with connect(connect_url, open_timeout=10, close_timeout=2) as ws:
        yield ws

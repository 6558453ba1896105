"""Helpers for the WeChat login tests: a uvicorn server on a free port, a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from tunnel_broker.wechat.simulator import WeChatSimulator

APPID = "wx0123456789abcdef"
OTHER_APPID = "wxfedcba9876543210"


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SimulatorServer:
    base_url: str
    simulator: WeChatSimulator
    appid: str
    secret: str
    other_appid: str
    other_secret: str


@contextlib.asynccontextmanager
async def run_server(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields its base URL.

    The socket is bound and listening before uvicorn starts, so clients may connect at once:
    the kernel queues them until uvicorn accepts. No readiness polling needed. Unlike
    ``tests.support.servers.run_uvicorn`` the access log stays on, so the tests also see that
    the simulator's request lines carry no secret.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    host, port = sock.getsockname()
    config = uvicorn.Config(app, log_config=None, lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()

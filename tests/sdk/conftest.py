"""Fixtures for the SDK's unit tests: a scripted fake broker (httpx ``MockTransport``) that both
clients can be pointed at, and webhook requests signed by the reference ``standardwebhooks``
library rather than by our own code, so verification is checked against an independent signer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from standardwebhooks import Webhook

from business_sdk import RetryPolicy, SyncTunnelBroker, TunnelBroker

BASE_URL = "http://broker.test"
API_KEY = "tbk_test_0123456789abcdef"

Reply = httpx.Response | Exception


def _problem(
    status: int, code: str, detail: str = "", *, retry_after: str | None = None, **extra: Any
) -> httpx.Response:
    """A problem-details answer as the broker writes it."""
    body = {
        "type": f"https://tunnel-broker.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail or code,
        "code": code,
        **extra,
    }
    headers = {"content-type": "application/problem+json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


ProblemFactory = Callable[..., httpx.Response]


@pytest.fixture
def problem() -> ProblemFactory:
    """``problem(status, code, detail="", retry_after=None, **extra)`` -> problem response."""
    return _problem


@dataclass
class FakeBroker:
    """Answers requests from a script of replies (responses or exceptions to raise), and
    records every request and every retry sleep."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def json(self, status: int = 200, body: Any = None) -> None:
        self.reply(httpx.Response(status, json=body if body is not None else {}))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unscripted request {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


class Client:
    """One test body drives either client: ``await api.call("send", ...)`` awaits the async
    client's coroutine, or calls the sync client directly (MockTransport never blocks)."""

    def __init__(self, mode: str, fake: FakeBroker, retry: RetryPolicy) -> None:
        self.mode = mode
        self.fake = fake
        self.sdk: TunnelBroker | SyncTunnelBroker
        if mode == "async":
            client = TunnelBroker(
                BASE_URL,
                API_KEY,
                retry=retry,
                http_client=httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
            )

            async def record_async(delay: float) -> None:
                fake.sleeps.append(delay)

            client._sleep = record_async
            self.sdk = client
        else:
            sync_client = SyncTunnelBroker(
                BASE_URL,
                API_KEY,
                retry=retry,
                http_client=httpx.Client(transport=httpx.MockTransport(fake.handler)),
            )
            sync_client._sleep = fake.sleeps.append
            self.sdk = sync_client

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.sdk, name)(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    async def collect(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        iterator = getattr(self.sdk, name)(*args, **kwargs)
        if hasattr(iterator, "__aiter__"):
            return [item async for item in iterator]
        return list(iterator)


@pytest.fixture
def fake() -> FakeBroker:
    return FakeBroker()


@pytest.fixture(params=["async", "sync"])
def api(request: pytest.FixtureRequest, fake: FakeBroker) -> Iterator[Client]:
    """Both clients, with deterministic retry delays (rng fixed at 0.5)."""
    policy = RetryPolicy(max_retries=3, backoff_base=0.1, backoff_max=1.0, rng=lambda: 0.5)
    yield Client(request.param, fake, policy)


# ------------------------------------------------------------------------- webhooks


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def make_secret() -> Callable[[], str]:
    return new_secret


Signer = Callable[..., dict[str, str]]


@pytest.fixture
def sign() -> Signer:
    """``sign(body, secret, *more_secrets, timestamp=..., msg_id=...)`` -> headers, with one
    ``v1`` signature per secret, computed by the ``standardwebhooks`` package."""

    def _sign(
        body: bytes,
        *secrets_: str,
        timestamp: float | None = None,
        msg_id: str = "msg_2Lq3yFSh3wjGdX1g",
    ) -> dict[str, str]:
        when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
        signatures = [Webhook(s).sign(msg_id, when, body.decode()) for s in secrets_]
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": " ".join(signatures),
        }

    return _sign


_counter = iter(range(1, 1_000_000))


def event_json(kind: str = "tunnel.message", **overrides: Any) -> dict[str, Any]:
    """One webhook event as the broker sends it."""
    n = next(_counter)
    event: dict[str, Any] = {
        "id": f"evt_{n:06d}",
        "type": kind,
        "time": "2026-11-23T10:00:00.000Z",
        "app_id": "app1",
        "tunnel_id": "tun_a",
        "user_id": "user-1",
        "identity": {"openid": "o-123", "nick": "小明"},
        "meta": {"room": "lobby"},
    }
    if kind == "tunnel.message":
        event["data"] = "hello"
    if kind == "tunnel.closed":
        event.update(code=1000, reason="bye")
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    return event_json


@pytest.fixture
def batch_body() -> Callable[..., bytes]:
    def _body(*events: dict[str, Any]) -> bytes:
        return json.dumps({"events": list(events)}, ensure_ascii=False).encode()

    return _body


# ------------------------------------------------------------------------- servers


@contextlib.asynccontextmanager
async def _serve_asgi(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1 and yield its base URL.

    The socket is bound and listening before uvicorn starts, so the port is known at once and
    early connections wait in the backlog instead of failing: no polling for readiness.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    # Leave SIGINT/SIGTERM to pytest: uvicorn would otherwise install its own handlers.
    server.capture_signals = contextlib.nullcontext
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
def serve_asgi() -> Callable[[Any], contextlib.AbstractAsyncContextManager[str]]:
    """``async with serve_asgi(app) as base_url: ...``"""
    return _serve_asgi

"""Each framework integration receives real webhooks from a real broker.

For Flask, Django and FastAPI, the SDK's own webhook endpoint is served by a real HTTP server on
127.0.0.1 (Werkzeug's threaded WSGI server in a background thread for Flask and Django,
uvicorn for FastAPI); a real broker process (``python -m tunnel_broker serve``, the helper of
``test_sdk_against_broker``) delivers to it, and a real WebSocket client talks through a tunnel
created with the SDK. The handlers are a mix of plain functions and coroutines, so the sync
integrations' private event loop runs inside a real server thread too.

Handlers run in server threads, so what they saw is kept in a thread-safe ``Seen`` that the
tests wait on (events, not sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import django
import httpx
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from django.urls import URLPattern, path
from fastapi import FastAPI
from flask import Flask
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from business_sdk import (
    Actions,
    TunnelBroker,
    TunnelClosed,
    TunnelConnected,
    TunnelEvent,
    TunnelMessage,
    WebhookHandler,
)
from business_sdk.integrations import django as django_integration
from business_sdk.integrations import flask as flask_integration
from business_sdk.integrations import starlette as starlette_integration
from tests.sdk import test_sdk_integration_django as django_unit_tests
from tests.sdk.test_sdk_against_broker import (
    API_KEY,
    WAIT,
    closed_with,
    new_secret,
    recv,
    run_broker,
)
from tests.support.waiting import scaled

pytestmark = pytest.mark.slow

WEBHOOK_PATH = "/webhooks/tunnel"
FRAMEWORKS = ["flask", "django", "fastapi"]

E = TypeVar("E", bound=TunnelEvent)


class Seen:
    """Every event a handler got, from whichever thread ran it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.events: list[TunnelEvent] = []

    def add(self, event: TunnelEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, tunnel_id: str) -> list[TunnelEvent]:
        with self._changed:
            return [e for e in self.events if e.tunnel_id == tunnel_id]

    def _wait(self, kind: type[E], tunnel_id: str, timeout: float) -> E:
        def found() -> E | None:
            return next(
                (e for e in self.events if isinstance(e, kind) and e.tunnel_id == tunnel_id),
                None,
            )

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no {kind.__name__} for {tunnel_id}; saw {self.events}")
            event = found()
            assert event is not None
            return event

    async def wait(self, kind: type[E], tunnel_id: str) -> E:
        """The first ``kind`` event of this tunnel, waiting for it off the event loop."""
        return await asyncio.to_thread(self._wait, kind, tunnel_id, scaled(WAIT))


def make_hooks(secret: str, seen: Seen) -> WebhookHandler:
    """A business server: record everything, refuse banned users, answer messages."""
    hooks = WebhookHandler(secret)

    @hooks.on_connected
    def gate(event: TunnelConnected, actions: Actions) -> None:
        seen.add(event)
        if event.identity.get("banned"):
            actions.reject("banned")

    @hooks.on_message
    async def answer(event: TunnelMessage, actions: Actions) -> None:
        await asyncio.sleep(0)  # a real coroutine: Flask and Django run it on a private loop
        seen.add(event)
        actions.reply(f"{event.identity['nick']} said {event.text}")

    @hooks.on_closed
    def forget(event: TunnelClosed, actions: Actions) -> None:
        seen.add(event)

    return hooks


# --------------------------------------------------------------------------- servers


class QuietHandler(WSGIRequestHandler):
    """No request log on stderr, and an idle keep-alive connection cannot pin a thread."""

    timeout = 10

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@contextlib.asynccontextmanager
async def serve_wsgi(app: Any) -> AsyncIterator[str]:
    """Serve a WSGI app with Werkzeug's threaded server in a thread; yields its base URL."""
    server: BaseWSGIServer = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler
    )
    # Track request threads so that closing the server joins them (Werkzeug makes them
    # daemons, which nobody waits for).
    server.daemon_threads = False  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-server"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        # serve_forever closes the server on its way out, joining the request threads.
        await asyncio.to_thread(server.shutdown)
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "WSGI server thread did not stop"


def flask_app(hooks: WebhookHandler) -> Flask:
    app = Flask(__name__)
    app.add_url_rule(
        WEBHOOK_PATH, view_func=flask_integration.webhook_view(hooks), methods=["POST"]
    )
    return app


# Django's URLconf for this file: the fixture fills it, and override_settings(ROOT_URLCONF=...)
# clears Django's URL caches on the way in and out.
urlpatterns: list[URLPattern] = []


def configure_django() -> None:
    """Django settings are process-wide and can be configured once. The Django unit tests
    configure them only if nobody did, so whichever file runs first configures them exactly as
    those tests do; what this file needs on top comes from ``override_settings``."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-secret",
            ROOT_URLCONF=django_unit_tests.__name__,
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=[
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
            ],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()


@contextlib.contextmanager
def django_app(hooks: WebhookHandler) -> Iterator[WSGIHandler]:
    """Django's WSGI application with the SDK's view at WEBHOOK_PATH, CSRF middleware on."""
    configure_django()
    urlpatterns[:] = [path(WEBHOOK_PATH.lstrip("/"), django_integration.webhook_view(hooks))]
    try:
        with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"]):
            yield WSGIHandler()
    finally:
        urlpatterns.clear()


def fastapi_app(hooks: WebhookHandler) -> FastAPI:
    app = FastAPI()
    app.add_api_route(WEBHOOK_PATH, starlette_integration.webhook_endpoint(hooks), methods=["POST"])
    return app


@contextlib.asynccontextmanager
async def serve(framework: str, hooks: WebhookHandler, serve_asgi: Any) -> AsyncIterator[str]:
    """The SDK's endpoint for ``framework`` on a real server; yields the webhook URL."""
    async with contextlib.AsyncExitStack() as stack:
        if framework == "flask":
            base_url = await stack.enter_async_context(serve_wsgi(flask_app(hooks)))
        elif framework == "django":
            app = stack.enter_context(django_app(hooks))
            base_url = await stack.enter_async_context(serve_wsgi(app))
        else:
            base_url = await stack.enter_async_context(serve_asgi(fastapi_app(hooks)))
        yield base_url + WEBHOOK_PATH


class Stack:
    def __init__(self, webhook_url: str, secret: str, sdk: TunnelBroker, seen: Seen) -> None:
        self.webhook_url = webhook_url
        self.secret = secret
        self.sdk = sdk
        self.seen = seen


@pytest.fixture(params=FRAMEWORKS)
async def stack(
    request: pytest.FixtureRequest, tmp_path: Path, serve_asgi: Any
) -> AsyncIterator[Stack]:
    """Framework server, then a broker delivering to it, then an SDK client; torn down in
    reverse, so the broker has dropped its connections before the server joins its threads."""
    secret, seen = new_secret(), Seen()
    async with (
        serve(request.param, make_hooks(secret, seen), serve_asgi) as webhook_url,
        run_broker(tmp_path, webhook_url, [secret]) as broker_url,
        TunnelBroker(broker_url, API_KEY) as sdk,
    ):
        yield Stack(webhook_url, secret, sdk, seen)


# --------------------------------------------------------------------------- tests


async def test_broker_webhooks_reach_the_handlers_and_replies_reach_the_client(
    stack: Stack,
) -> None:
    identity = {"openid": "o-1", "nick": "小明"}
    tunnel = await stack.sdk.create_tunnel("user-1", identity=identity, meta={"room": "lobby"})
    async with connect(tunnel.connect_url, open_timeout=scaled(WAIT)) as ws:
        connected = await stack.seen.wait(TunnelConnected, tunnel.tunnel_id)
        assert (connected.app_id, connected.user_id) == ("sdk", "user-1")
        assert connected.identity == identity
        assert connected.meta == {"room": "lobby"}

        await ws.send("你好")
        assert await recv(ws) == "小明 said 你好"
        message = await stack.seen.wait(TunnelMessage, tunnel.tunnel_id)
        assert (message.text, message.is_binary) == ("你好", False)
        assert (message.user_id, message.identity) == ("user-1", identity)

    closed = await stack.seen.wait(TunnelClosed, tunnel.tunnel_id)
    assert (closed.code, closed.user_id, closed.identity) == (1000, "user-1", identity)
    assert [type(e) for e in stack.seen.of(tunnel.tunnel_id)] == [
        TunnelConnected,
        TunnelMessage,
        TunnelClosed,
    ]


async def test_forged_requests_to_the_same_endpoint_are_refused(
    stack: Stack, sign: Callable[..., dict[str, str]], make_event: Any, batch_body: Any
) -> None:
    body = batch_body(make_event(tunnel_id="tun_forged", data="hello"))
    signed = sign(body, stack.secret)
    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=scaled(WAIT)) as http:
        tampered = await http.post(
            stack.webhook_url, content=body.replace(b"hello", b"HELLO"), headers=signed | json_type
        )
        wrong_secret = await http.post(
            stack.webhook_url, content=body, headers=sign(body, new_secret()) | json_type
        )
        unsigned = await http.post(stack.webhook_url, content=body, headers=json_type)
        not_json = b"not json"
        malformed = await http.post(
            stack.webhook_url, content=not_json, headers=sign(not_json, stack.secret) | json_type
        )
        # Control: the very same request, untampered, is accepted and answered.
        genuine = await http.post(stack.webhook_url, content=body, headers=signed | json_type)

    for refused in (tampered, wrong_secret, unsigned):
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "invalid_signature"
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["code"] == "invalid_payload"
    assert genuine.status_code == 200, genuine.text
    assert [a["data"] for a in genuine.json()["actions"]] == ["小明 said hello"]
    # Only the genuine request ran a handler.
    assert [e.text for e in stack.seen.of("tun_forged") if isinstance(e, TunnelMessage)] == [
        "hello"
    ]


async def test_reject_in_on_connected_closes_the_client_with_4403(stack: Stack) -> None:
    banned = await stack.sdk.create_tunnel("mallory", identity={"nick": "M", "banned": True})
    async with connect(banned.connect_url, open_timeout=scaled(WAIT)) as ws:
        # Sent before the webhook is answered: the broker must hold it, then drop it.
        with contextlib.suppress(ConnectionClosed):
            await ws.send("let me in")
        assert await closed_with(ws) == (4403, "banned")

    connected = await stack.seen.wait(TunnelConnected, banned.tunnel_id)
    assert (connected.user_id, connected.identity["banned"]) == ("mallory", True)
    closed = await stack.seen.wait(TunnelClosed, banned.tunnel_id)
    assert (closed.code, closed.reason) == (4403, "banned")
    assert not [e for e in stack.seen.of(banned.tunnel_id) if isinstance(e, TunnelMessage)]

    # The gate refuses only the banned: an ordinary user gets through on the same broker.
    tunnel = await stack.sdk.create_tunnel("ann", identity={"nick": "Ann"})
    async with connect(tunnel.connect_url, open_timeout=scaled(WAIT)) as ws:
        await ws.send("hi")
        assert await recv(ws) == "Ann said hi"

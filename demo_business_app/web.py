"""The demo server's HTTP face: the mini-program simulator page, its login and tunnel
endpoints, and the broker's webhook.

The page talks to this one origin only. ``/api/sim-login`` stands in for ``wx.login`` +
``wx.getUserInfo`` (it asks the WeChat simulator for a code and signed user data), and
``/api/login`` forwards the Wafer login headers to the broker, which keeps the WeChat app
secret and answers an ``skey``: exactly what a mini-program's ``wx.request`` would do, minus
the CORS set-up a second origin would need. ``/api/tunnel`` is the business server's own
endpoint: it trusts only the broker's word on who the ``X-WX-Skey`` belongs to.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from business_sdk import Target, TunnelBroker, TunnelBrokerError
from business_sdk.integrations.starlette import webhook_endpoint
from demo_business_app.arena import Arena
from demo_business_app.board import StrokeStore
from demo_business_app.chat import BOARD_GROUP, DEFAULT_ROOM, ROOMS, room_group
from demo_business_app.config import DemoConfig
from demo_business_app.hooks import DemoHooks
from demo_business_app.protocol import nick_of

STATIC = Path(__file__).parent / "static"
# The mini-program client library (clients/miniprogram), served to the page as it is.
CLIENT_LIBRARY = Path(__file__).parent.parent / "clients" / "miniprogram" / "lib" / "index.js"
LOGIN_HEADERS = (
    "X-WX-Code",
    "X-WX-Encrypted-Data",
    "X-WX-IV",
    "X-WX-Raw-Data",
    "X-WX-Signature",
)
MAX_NAME = 20


def problem(status: int, code: str, detail: str) -> JSONResponse:
    """An RFC 9457 problem document, the same shape the broker answers errors with."""
    body = {"type": "about:blank", "title": detail, "status": status, "detail": detail}
    return JSONResponse(
        {**body, "code": code}, status_code=status, media_type="application/problem+json"
    )


class DemoServer:
    """The demo's long-lived parts: broker client, board store, arena, webhook handlers."""

    def __init__(self, config: DemoConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.broker = TunnelBroker(config.broker_url, config.api_key)
        self.http = httpx.AsyncClient(timeout=10.0)
        self.store = StrokeStore(config.db_path)
        self.arena = Arena(
            self._push, bot_wait=config.bot_wait, round_seconds=config.round_seconds, rng=rng
        )
        self.hooks = DemoHooks(self.broker, self.store, self.arena, config.webhook_secrets)

    async def _push(self, user_id: str, frame: str) -> None:
        await self.broker.send(Target.users(user_id), frame)

    async def aclose(self) -> None:
        await self.arena.aclose()
        await self.broker.aclose()
        await self.http.aclose()
        self.store.close()

    # ------------------------------------------------------------------ endpoints

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def client_config(self, request: Request) -> Response:
        """What the page needs to draw itself; no secret in here."""
        return JSONResponse(
            {
                "rooms": list(ROOMS),
                "bot_wait": self.config.bot_wait,
                "round_seconds": self.config.round_seconds,
            }
        )

    async def sim_login(self, request: Request) -> Response:
        """``wx.login`` + ``wx.getUserInfo`` for the name typed on the page."""
        body = await _json(request)
        name = body.get("user") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
            return problem(422, "validation_failed", f"user must be 1 to {MAX_NAME} characters")
        name = name.strip()
        try:
            answer = await self.http.post(
                self.config.simulator_url + "/simulator/login",
                json={"appid": self.config.wechat_appid, "user": name, "nickName": name},
            )
        except httpx.HTTPError:
            return problem(502, "simulator_unavailable", "the WeChat simulator is not reachable")
        if answer.status_code != 200:
            return problem(502, "simulator_error", "the WeChat simulator refused the login")
        minted = answer.json()
        keys = ("code", "encryptedData", "iv", "rawData", "signature")
        return JSONResponse({key: minted[key] for key in keys})

    async def login(self, request: Request) -> Response:
        """Forward the Wafer login headers to the broker's session service, unchanged."""
        headers = {h: request.headers[h] for h in LOGIN_HEADERS if h in request.headers}
        url = f"{self.config.broker_url}/v1/wechat/{self.config.broker_app_id}/login"
        try:
            answer = await self.http.post(url, headers=headers)
        except httpx.HTTPError:
            return problem(502, "broker_unavailable", "the broker is not reachable")
        body = answer.json()
        if answer.status_code != 200:
            return JSONResponse(body, status_code=answer.status_code)
        keep = ("skey", "identity", "expires_at")
        return JSONResponse({key: body[key] for key in keep})

    async def tunnel(self, request: Request) -> Response:
        """Hand a tunnel to the logged-in user of ``X-WX-Skey``."""
        skey = request.headers.get("X-WX-Skey", "")
        if not skey:
            return problem(401, "session_not_found", "log in first (X-WX-Skey missing)")
        try:
            session = await self.broker.resolve_session(skey)
            if session is None:
                return problem(401, "session_not_found", "session unknown or expired")
            nick = nick_of(session.identity, session.openid[-6:])
            created = await self.broker.create_tunnel(
                session.openid,
                identity={"openid": session.openid, "nickName": nick},
                groups=[room_group(DEFAULT_ROOM), BOARD_GROUP],
                ttl=self.config.tunnel_ttl,
            )
        except TunnelBrokerError as exc:
            return problem(502, "broker_error", f"the broker refused: {type(exc).__name__}")
        return JSONResponse(
            {
                "tunnel_id": created.tunnel_id,
                "connect_url": created.connect_url,
                "expires_at": created.expires_at.isoformat(),
                "you": {"openid": session.openid, "nick": nick},
            }
        )


async def client_library(_: Request) -> Response:
    return FileResponse(CLIENT_LIBRARY, media_type="text/javascript")


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def create_app(config: DemoConfig, *, rng: random.Random | None = None) -> Starlette:
    """The demo as an ASGI app; ``app.state.demo`` is its ``DemoServer`` (for tests)."""
    demo = DemoServer(config, rng=rng)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await demo.aclose()

    app = Starlette(
        routes=[
            Route("/", demo.index, methods=["GET"]),
            Route("/healthz", demo.healthz, methods=["GET"]),
            Route("/api/config", demo.client_config, methods=["GET"]),
            Route("/api/sim-login", demo.sim_login, methods=["POST"]),
            Route("/api/login", demo.login, methods=["POST"]),
            Route("/api/tunnel", demo.tunnel, methods=["POST"]),
            Route("/webhook", webhook_endpoint(demo.hooks.handler), methods=["POST"]),
            Route("/static/vendor/tunnel-broker-client.js", client_library, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.demo = demo
    return app

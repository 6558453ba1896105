"""WeChat sessions end to end: a simulated WeChat, a real broker process, the SDK, and business
endpoints protected by the SDK's Starlette/FastAPI helpers.

The WeChat simulator (``tunnel_broker.wechat.simulator``) is served by uvicorn in this process;
the broker runs as ``python -m tunnel_broker serve`` (the helper of ``test_sdk_against_broker``)
with the app's ``wechat_appid``/``wechat_secret`` and the simulator as its WeChat API. A
"mini-program" logs in through the broker exactly as the Wafer client SDKs do (``GET
/v1/wechat/{app}/login`` with ``X-WX-Code``), then the business server checks its ``skey``.

No ``from __future__ import annotations`` here: FastAPI reads the route's ``Annotated``
dependency at runtime, and it refers to a local name.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from business_sdk import (
    AuthenticationError,
    Session,
    SyncTunnelBroker,
    TunnelBroker,
    WebhookHandler,
)
from business_sdk.integrations.starlette import require_session, webhook_route, with_session
from tests.sdk.test_sdk_against_broker import API_KEY, new_secret, run_broker
from tunnel_broker.wechat.simulator import create_simulator_app
from tunnel_broker.wechat.simulator.state import SimulatedLogin, WeChatSimulator

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "business-sdk.md"

APPID = "wx0123456789abcdef"
WECHAT_SECRET = "wechat-app-secret-for-the-sdk-tests"

ServeAsgi = Callable[[Any], contextlib.AbstractAsyncContextManager[str]]


@dataclass
class World:
    broker_url: str
    sdk: TunnelBroker
    simulator: WeChatSimulator
    mini_program: httpx.AsyncClient  # no API key: what a phone can send
    serve_asgi: ServeAsgi

    async def login(self, user: str = "ann", **profile: Any) -> tuple[SimulatedLogin, str]:
        """``wx.login`` + ``wx.getUserInfo`` on the phone, then the Wafer login request; returns
        what WeChat minted and the broker's ``skey``."""
        minted = self.simulator.mint_login(APPID, user=user, profile=profile or None)
        response = await self.mini_program.get(
            "/v1/wechat/sdk/login",
            headers={
                "X-WX-Code": minted.code,
                "X-WX-Encrypted-Data": minted.encrypted_data,
                "X-WX-IV": minted.iv,
            },
        )
        assert response.status_code == 200, response.text
        skey: str = response.json()["skey"]
        return minted, skey


@pytest.fixture
async def world(tmp_path: Path, serve_asgi: ServeAsgi) -> AsyncIterator[World]:
    simulator_app = create_simulator_app({APPID: WECHAT_SECRET})
    webhook_secret = new_secret()
    receiver = Starlette(routes=[webhook_route(WebhookHandler(secrets=[webhook_secret]))])
    async with (
        serve_asgi(simulator_app) as simulator_url,
        serve_asgi(receiver) as receiver_url,
        run_broker(
            tmp_path,
            f"{receiver_url}/webhooks",
            [webhook_secret],
            app_fields={
                "wechat_appid": APPID,
                "wechat_secret": WECHAT_SECRET,
                "wechat_api_base_url": simulator_url,
            },
        ) as broker_url,
        TunnelBroker(broker_url, API_KEY) as sdk,
        httpx.AsyncClient(base_url=broker_url) as mini_program,
    ):
        yield World(broker_url, sdk, simulator_app.state.simulator, mini_program, serve_asgi)


async def test_resolve_session_returns_the_user_the_broker_verified(world: World) -> None:
    minted, skey = await world.login("ann", nickName="Ann", city="Shenzhen")
    session = await world.sdk.resolve_session(skey)
    assert session is not None
    assert session.app_id == "sdk"
    assert (session.openid, session.unionid) == (minted.openid, minted.unionid)
    assert session.identity["openid"] == minted.openid
    assert session.identity["nickName"] == "Ann"
    assert session.identity["city"] == "Shenzhen"
    assert session.created_at.tzinfo is not None
    assert session.created_at < session.expires_at

    # Every use renews the idle expiry: a later resolve never reports an earlier end.
    again = await world.sdk.resolve_session(skey)
    assert again is not None and again.expires_at >= session.expires_at
    assert again.created_at == session.created_at


async def test_strings_that_are_not_live_skeys_resolve_to_none(world: World) -> None:
    _, skey = await world.login()
    for forged in ("", "not-a-session", skey + "x", "x" * 1000, "中文"):
        assert await world.sdk.resolve_session(forged) is None, forged
    # A wrong API key is an error, not an unknown session.
    async with TunnelBroker(world.broker_url, "tbk_wrong_0123456789abcdef") as wrong:
        with pytest.raises(AuthenticationError):
            await wrong.resolve_session(skey)


async def test_logging_out_on_the_phone_ends_the_session(world: World) -> None:
    _, skey = await world.login()
    out = await world.mini_program.post("/v1/wechat/sdk/logout", headers={"X-WX-Skey": skey})
    assert out.json() == {"revoked": True}
    assert await world.sdk.resolve_session(skey) is None


async def test_revoke_session_and_revoke_user_sessions(world: World) -> None:
    _, ann_skey = await world.login("ann")
    minted, bob_phone = await world.login("bob")
    _, bob_tablet = await world.login("bob")

    assert await world.sdk.revoke_session(ann_skey) == 1
    assert await world.sdk.resolve_session(ann_skey) is None
    assert await world.sdk.revoke_session(ann_skey) == 0  # already gone: nothing to do
    assert await world.sdk.revoke_session("never-issued") == 0

    assert await world.sdk.resolve_session(bob_phone) is not None
    assert await world.sdk.revoke_user_sessions(minted.openid) == 2
    assert await world.sdk.resolve_session(bob_phone) is None
    assert await world.sdk.resolve_session(bob_tablet) is None
    assert await world.sdk.revoke_user_sessions(minted.openid) == 0


async def test_fastapi_endpoint_protected_by_the_session(world: World) -> None:
    app = FastAPI()
    current_session = require_session(world.sdk)

    @app.get("/me")
    async def me(session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
        return {"openid": session.openid, "nick": session.identity.get("nickName")}

    ann, ann_skey = await world.login("ann", nickName="Ann")
    bob, bob_skey = await world.login("bob", nickName="Bob")
    async with world.serve_asgi(app) as app_url, httpx.AsyncClient(base_url=app_url) as phone:
        ok = await phone.get("/me", headers={"X-WX-Skey": ann_skey})
        assert ok.status_code == 200
        assert ok.json() == {"openid": ann.openid, "nick": "Ann"}
        other = await phone.get("/me", headers={"X-WX-Skey": bob_skey})
        assert other.json()["openid"] == bob.openid

        missing = await phone.get("/me")
        assert missing.status_code == 401 and "X-WX-Skey" in missing.json()["detail"]
        forged = await phone.get("/me", headers={"X-WX-Skey": "forged-" + ann_skey})
        assert forged.status_code == 401
        huge = await phone.get("/me", headers={"X-WX-Skey": "x" * 4000})
        assert huge.status_code == 401

        assert await world.sdk.revoke_session(ann_skey) == 1
        revoked = await phone.get("/me", headers={"X-WX-Skey": ann_skey})
        assert revoked.status_code == 401
        assert (await phone.get("/me", headers={"X-WX-Skey": bob_skey})).status_code == 200

        assert await world.sdk.revoke_user_sessions(bob.openid) == 1
        assert (await phone.get("/me", headers={"X-WX-Skey": bob_skey})).status_code == 401


async def test_starlette_endpoint_protected_by_the_session(world: World) -> None:
    @with_session(world.sdk)
    async def me(request: Request, session: Session) -> Response:
        return JSONResponse({"openid": session.openid})

    app = Starlette(routes=[Route("/me", me)])
    minted, skey = await world.login("carol")
    async with world.serve_asgi(app) as app_url, httpx.AsyncClient(base_url=app_url) as phone:
        ok = await phone.get("/me", headers={"X-WX-Skey": skey})
        assert ok.status_code == 200 and ok.json() == {"openid": minted.openid}
        await world.sdk.revoke_session(skey)
        refused = await phone.get("/me", headers={"X-WX-Skey": skey})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "session_not_found"


async def test_the_sync_client_does_the_same(world: World) -> None:
    minted, phone_skey = await world.login("dan", nickName="Dan")
    _, tablet_skey = await world.login("dan")

    def business_server() -> None:
        # A blocking client, as in a Flask or Django view (run off the event loop, which
        # serves the WeChat simulator).
        with SyncTunnelBroker(world.broker_url, API_KEY) as broker:
            session = broker.resolve_session(phone_skey)
            assert session is not None
            assert (session.openid, session.identity["nickName"]) == (minted.openid, "Dan")
            assert broker.resolve_session("not-a-session") is None
            assert broker.revoke_session(phone_skey) == 1
            assert broker.resolve_session(phone_skey) is None
            assert broker.resolve_session(tablet_skey) is not None
            assert broker.revoke_user_sessions(minted.openid) == 1
            assert broker.resolve_session(tablet_skey) is None

    await asyncio.to_thread(business_server)


def docs_example(marker: str = "```python\n# app.py\n") -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(marker) + len("```python\n")
    return text[start : text.index("```", start)]


async def test_the_documented_fastapi_server_runs_as_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNNEL_BROKER_URL", world.broker_url)
    monkeypatch.setenv("TUNNEL_BROKER_API_KEY", API_KEY)
    module: dict[str, Any] = {"__name__": "docs_app"}
    exec(compile(docs_example(), f"{DOCS}#app.py", "exec"), module)
    minted, skey = await world.login("erin", nickName="Erin")
    try:
        async with (
            world.serve_asgi(module["app"]) as app_url,
            httpx.AsyncClient(base_url=app_url, headers={"X-WX-Skey": skey}) as phone,
        ):
            me = await phone.get("/me")
            assert me.json() == {"openid": minted.openid, "nickName": "Erin"}
            tunnel = await phone.post("/tunnel")
            assert tunnel.json()["connect_url"].startswith("ws://127.0.0.1:")
            out = await phone.post("/logout-everywhere")
            assert out.json() == {"revoked": 1, "closed": 0}
            assert (await phone.get("/me")).status_code == 401
    finally:
        await module["broker"].aclose()

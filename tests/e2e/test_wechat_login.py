"""WeChat login through the simulator, sessions, and tunnels opened with a session."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.broker import BrokerHandle, app_config, open_tunnel, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.servers import run_uvicorn
from tests.support.waiting import check_for
from tunnel_broker.backend.sessions import MemorySessionStore, Session
from tunnel_broker.wechat import encrypt_user_data
from tunnel_broker.wechat.simulator import create_simulator_app

APPID = "wx0123456789abcdef"
SECRET = "wechat-app-secret-never-shown"


@dataclass
class LoginWorld:
    broker: BrokerHandle
    simulator: Any
    receiver: WebhookReceiver
    http: httpx.AsyncClient

    def mint(self, user: str = "alice", **kw: Any) -> Any:
        return self.simulator.mint_login(APPID, user=user, **kw)

    async def login(self, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        if body:
            return await self.http.post("/v1/wechat/demo/login", json=body, headers=headers)
        return await self.http.get("/v1/wechat/demo/login", headers=headers)


@pytest.fixture
async def world(receiver: WebhookReceiver) -> AsyncIterator[LoginWorld]:
    sim_app = create_simulator_app({APPID: SECRET})
    async with run_uvicorn(sim_app) as sim_port:
        config = app_config("demo", receiver.url, receiver.secret, max_sessions_per_openid=2)
        config.update(
            wechat_appid=APPID,
            wechat_secret=SECRET,
            wechat_api_base_url=f"http://127.0.0.1:{sim_port}",
            allow_session_tunnels=True,
        )
        plain = app_config("plain", receiver.url, receiver.secret)
        async with (
            run_broker([config, plain]) as broker,
            httpx.AsyncClient(base_url=broker.url) as http,
        ):
            yield LoginWorld(broker, sim_app.state.simulator, receiver, http)


async def test_wafer_header_login_with_encrypted_data(world: LoginWorld) -> None:
    login = world.mint(profile={"nickName": "Alice", "city": "Shenzhen"})
    response = await world.login(
        {"X-WX-Code": login.code, "X-WX-Encrypted-Data": login.encrypted_data, "X-WX-IV": login.iv}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and body["data"]["skey"] == body["skey"]  # wafer2 shape
    assert body["F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"] == 1  # wafer 1 shape
    assert body["data"]["userinfo"]["openId"] == login.openid
    assert body["identity"]["openid"] == login.openid
    assert body["identity"]["unionid"] == login.unionid
    assert body["identity"]["nickName"] == "Alice"
    assert len(body["skey"]) >= 40


async def test_json_body_login_with_raw_data_and_code_only_login(world: LoginWorld) -> None:
    login = world.mint(user="bob", profile={"nickName": "Bob"})
    signed = await world.login(code=login.code, rawData=login.raw_data, signature=login.signature)
    assert signed.status_code == 200, signed.text
    assert signed.json()["identity"]["nickName"] == "Bob"
    # The code alone (wafer2's loginWithCode) answers the profile of the last full login,
    # as wafer-node-sdk did from its database: tunnels opened with it keep the nickname.
    bare = await world.login({"X-WX-Code": world.mint(user="bob").code})
    assert bare.status_code == 200
    assert bare.json()["identity"] == signed.json()["identity"]
    assert bare.json()["data"]["userinfo"]["nickName"] == "Bob"
    # A user who never logged in in full has no profile to answer.
    stranger = await world.login({"X-WX-Code": world.mint(user="carol").code})
    assert set(stranger.json()["identity"]) == {"openid", "unionid"}


async def test_raw_data_header_in_utf8_verifies(world: LoginWorld) -> None:
    """wx.request sends header values as UTF-8: a Chinese nickname in X-WX-Raw-Data."""
    login = world.mint(user="dai", profile={"nickName": "小戴", "city": "深圳"})
    headers = {
        "X-WX-Code": login.code.encode(),
        "X-WX-Raw-Data": login.raw_data.encode("utf-8"),
        "X-WX-Signature": login.signature.encode(),
    }
    response = await world.http.get("/v1/wechat/demo/login", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["identity"]["nickName"] == "小戴"
    assert response.json()["identity"]["city"] == "深圳"


async def test_bad_and_reused_codes_are_401(world: LoginWorld) -> None:
    bad = await world.login({"X-WX-Code": "no-such-code"})
    assert bad.status_code == 401 and bad.json()["code"] == "wechat_invalid_code"
    login = world.mint()
    assert (await world.login({"X-WX-Code": login.code})).status_code == 200
    reused = await world.login({"X-WX-Code": login.code})
    assert reused.status_code == 401 and reused.json()["code"] == "wechat_invalid_code"
    missing = await world.login({})
    assert missing.status_code == 422


async def test_wrong_signature_tampered_ciphertext_and_wrong_watermark_are_400(
    world: LoginWorld,
) -> None:
    login = world.mint()
    wrong_sig = await world.login(code=login.code, rawData=login.raw_data, signature="0" * 40)
    assert wrong_sig.status_code == 400 and wrong_sig.json()["code"] == "invalid_user_data"

    login = world.mint()
    flipped = login.encrypted_data[:10] + ("A" if login.encrypted_data[10] != "A" else "B")
    tampered = flipped + login.encrypted_data[11:]
    response = await world.login(code=login.code, encryptedData=tampered, iv=login.iv)
    assert response.status_code == 400 and response.json()["code"] == "invalid_user_data"

    login = world.mint()
    session_key = world.simulator._codes[login.code].session_key
    foreign = encrypt_user_data(
        {"openId": login.openid, "nickName": "Eve"},
        session_key,
        "wxSOMEOTHERAPP",
        timestamp=int(time.time()),
    )
    response = await world.login(
        code=login.code, encryptedData=foreign.encrypted_data, iv=foreign.iv
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_user_data"


async def test_wechat_busy_is_retried_and_unknown_app_is_404(world: LoginWorld) -> None:
    world.simulator.inject_errcode(-1, times=1)
    login = world.mint()
    assert (await world.login({"X-WX-Code": login.code})).status_code == 200
    world.simulator.inject_errcode(-1, times=10)
    busy = await world.login({"X-WX-Code": world.mint().code})
    assert busy.status_code == 503 and busy.json()["code"] == "wechat_unavailable"
    world.simulator.clear_faults()
    missing = await world.http.get("/v1/wechat/plain/login", headers={"X-WX-Code": "x"})
    assert missing.status_code == 404 and missing.json()["code"] == "wechat_not_configured"


async def test_sessions_resolve_revoke_and_reuse_after_logout(world: LoginWorld) -> None:
    demo = world.broker.client("demo")
    login = world.mint(profile={"nickName": "Carol"})
    skey = (
        await world.login(code=login.code, rawData=login.raw_data, signature=login.signature)
    ).json()["skey"]
    resolved = await demo.http.post("/v1/sessions/resolve", json={"skey": skey})
    assert resolved.status_code == 200
    assert resolved.json()["openid"] == login.openid
    assert resolved.json()["identity"]["nickName"] == "Carol"
    # Another app cannot resolve it.
    other = await world.broker.client("plain").http.post(
        "/v1/sessions/resolve", json={"skey": skey}
    )
    assert other.status_code == 401 and other.json()["code"] == "session_not_found"
    # Logout revokes; the skey is dead for everything afterwards.
    out = await world.http.post("/v1/wechat/demo/logout", headers={"X-WX-Skey": skey})
    assert out.json() == {"revoked": True}
    again = await demo.http.post("/v1/sessions/resolve", json={"skey": skey})
    assert again.status_code == 401
    tunnel = await world.http.post("/v1/tunnels", headers={"X-WX-Skey": skey})
    assert tunnel.status_code == 401 and tunnel.json()["code"] == "session_not_found"
    # The business server can revoke every session of a user.
    skeys = [
        (await world.login({"X-WX-Code": world.mint(user="dan").code})).json()["skey"]
        for _ in range(2)
    ]
    openid = world.mint(user="dan").openid
    revoked = await demo.http.post("/v1/sessions/revoke", json={"openid": openid})
    assert revoked.json() == {"revoked": 2}
    for key in skeys:
        assert (await demo.http.post("/v1/sessions/resolve", json={"skey": key})).status_code == 401


async def test_a_user_holds_at_most_max_sessions(world: LoginWorld) -> None:
    demo = world.broker.client("demo")
    skeys = [
        (await world.login({"X-WX-Code": world.mint(user="erin").code})).json()["skey"]
        for _ in range(3)
    ]
    statuses = [
        (await demo.http.post("/v1/sessions/resolve", json={"skey": k})).status_code for k in skeys
    ]
    assert statuses == [401, 200, 200]  # the oldest was revoked


async def test_session_tunnel_carries_the_verified_identity_in_webhooks(world: LoginWorld) -> None:
    login = world.mint(user="frank", profile={"nickName": "Frank"})
    skey = (
        await world.login(
            {
                "X-WX-Code": login.code,
                "X-WX-Encrypted-Data": login.encrypted_data,
                "X-WX-IV": login.iv,
            }
        )
    ).json()["skey"]
    # The client cannot choose who it is.
    forged = await world.http.post(
        "/v1/tunnels", headers={"X-WX-Skey": skey}, json={"user_id": "admin"}
    )
    assert forged.status_code == 422
    created = await world.http.post("/v1/tunnels", headers={"X-WX-Skey": skey}, json={"ttl": 60})
    assert created.status_code == 201, created.text
    async with open_tunnel(created.json()["connect_url"]) as ws:
        await ws.send("hi")
        await asyncio.wait_for(ws.recv(), 5)
    tunnel_id = created.json()["tunnel_id"]
    await check_for(5, lambda: world.receiver.events_of(tunnel_id, "tunnel.closed"))
    for event in world.receiver.events_of(tunnel_id):
        assert event["user_id"] == login.openid
        assert event["identity"]["openid"] == login.openid
        assert event["identity"]["nickName"] == "Frank"


async def test_session_tunnels_need_the_apps_permission(receiver: WebhookReceiver) -> None:
    sim_app = create_simulator_app({APPID: SECRET})
    async with run_uvicorn(sim_app) as sim_port:
        config = app_config("closed", receiver.url, receiver.secret)
        config.update(
            wechat_appid=APPID,
            wechat_secret=SECRET,
            wechat_api_base_url=f"http://127.0.0.1:{sim_port}",
        )
        async with run_broker([config]) as broker, httpx.AsyncClient(base_url=broker.url) as http:
            code = sim_app.state.simulator.mint_login(APPID, user="g").code
            skey = (await http.get("/v1/wechat/closed/login", headers={"X-WX-Code": code})).json()[
                "skey"
            ]
            refused = await http.post("/v1/tunnels", headers={"X-WX-Skey": skey})
            assert (
                refused.status_code == 403 and refused.json()["code"] == "session_tunnels_disabled"
            )


async def test_no_secret_or_session_key_in_responses_logs_or_metrics(
    world: LoginWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    keys: list[str] = []
    for attempt in range(3):
        login = world.mint(user=f"h{attempt}")
        keys.append(world.simulator._codes[login.code].session_key)
        response = await world.login(
            {
                "X-WX-Code": login.code,
                "X-WX-Encrypted-Data": login.encrypted_data,
                "X-WX-IV": login.iv,
            }
        )
        seen.append(response.text)
    seen.append((await world.login({"X-WX-Code": "bad"})).text)
    seen.append((await world.http.get("/metrics")).text)
    seen.append((await world.http.get("/openapi.json")).text)
    seen.extend(record.getMessage() for record in caplog.records)
    seen.extend(repr(app) for app in world.broker.node.apps.all())
    everything = "\n".join(seen)
    assert SECRET not in everything
    for key in keys:
        assert key not in everything


async def test_session_store_idle_and_absolute_expiry() -> None:
    store = MemorySessionStore()
    now = time.time()
    session = Session("a", "o", None, {"openid": "o"}, now, now + 1000, idle_seconds=100)
    skey = await store.create(session, max_per_openid=5)
    assert await store.resolve(skey, now=now + 90) is not None
    assert await store.resolve(skey, now=now + 180) is not None  # the use at +90 renewed it
    assert await store.resolve(skey, now=now + 400) is None  # idle for 220 s
    skey = await store.create(session, max_per_openid=5)
    for t in range(90, 1000, 90):
        assert await store.resolve(skey, now=now + t) is not None
    assert await store.resolve(skey, now=now + 1001) is None  # absolute lifetime

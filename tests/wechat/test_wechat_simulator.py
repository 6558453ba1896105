"""The WeChat simulator: its state directly, its HTTP face in-process, and its CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port
from tests.support.waiting import check_for
from tests.wechat.wechat_helpers import APPID, OTHER_APPID, FakeClock
from tunnel_broker.wechat import check_raw_data_signature, decrypt_user_data
from tunnel_broker.wechat.simulator import (
    Answer,
    WeChatSimulator,
    create_simulator_app,
    simulated_openid,
    simulated_unionid,
)
from tunnel_broker.wechat.simulator.__main__ import parse_args

SECRET = "simulator-test-secret"
OTHER_SECRET = "other-test-secret"
RID = re.compile(r", rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


def exchange(simulator: WeChatSimulator, code: str, **overrides: str) -> tuple[int, Any]:
    params = {
        "appid": APPID,
        "secret": SECRET,
        "js_code": code,
        "grant_type": "authorization_code",
        **overrides,
    }
    answer = simulator.jscode2session(params)
    return answer.status, json.loads(answer.body)


def errcode_of(simulator: WeChatSimulator, code: str, **overrides: str) -> int:
    status, body = exchange(simulator, code, **overrides)
    assert status == 200
    assert set(body) == {"errcode", "errmsg"}
    assert RID.search(body["errmsg"])
    errcode: int = body["errcode"]
    return errcode


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def simulator(clock: FakeClock) -> WeChatSimulator:
    return WeChatSimulator({APPID: SECRET, OTHER_APPID: OTHER_SECRET}, clock=clock)


# the simulated backend


def test_a_minted_code_exchanges_for_the_session_that_signed_and_encrypted(
    simulator: WeChatSimulator, clock: FakeClock
) -> None:
    login = simulator.mint_login(APPID, user="alice", profile={"nickName": "小明", "gender": 1})
    status, body = exchange(simulator, login.code)
    assert status == 200
    assert body == {
        "session_key": body["session_key"],
        "openid": simulated_openid(APPID, "alice"),
        "unionid": simulated_unionid("alice"),
    }
    session_key = body["session_key"]
    assert check_raw_data_signature(login.raw_data, login.signature, session_key)
    assert json.loads(login.raw_data)["nickName"] == "小明"
    data = decrypt_user_data(login.encrypted_data, login.iv, session_key, APPID)
    assert data["openId"] == login.openid == body["openid"]
    assert data["unionId"] == login.unionid
    assert data["nickName"] == "小明"
    assert data["watermark"] == {"appid": APPID, "timestamp": int(clock.now)}


def test_each_login_gets_a_fresh_session_key(simulator: WeChatSimulator) -> None:
    keys = {exchange(simulator, simulator.mint_login(APPID, user="a").code)[1]["session_key"]}
    keys.add(exchange(simulator, simulator.mint_login(APPID, user="a").code)[1]["session_key"])
    assert len(keys) == 2


def test_openids_are_per_app_and_unionids_per_user() -> None:
    assert simulated_openid(APPID, "alice") == simulated_openid(APPID, "alice")
    assert simulated_openid(APPID, "alice") != simulated_openid(OTHER_APPID, "alice")
    assert simulated_openid(APPID, "alice") != simulated_openid(APPID, "bob")
    assert simulated_unionid("alice") != simulated_unionid("bob")
    openid = simulated_openid(APPID, "alice")
    assert len(openid) == 28
    assert openid.startswith("o")


def test_a_given_openid_and_no_unionid(simulator: WeChatSimulator) -> None:
    login = simulator.mint_login(APPID, openid="oGivenOpenId", with_unionid=False)
    _, body = exchange(simulator, login.code)
    assert set(body) == {"session_key", "openid"}
    assert body["openid"] == "oGivenOpenId"
    data = decrypt_user_data(login.encrypted_data, login.iv, body["session_key"], APPID)
    assert "unionId" not in data


def test_codes_are_single_use(simulator: WeChatSimulator) -> None:
    code = simulator.mint_login(APPID, user="alice").code
    assert exchange(simulator, code)[0] == 200
    assert errcode_of(simulator, code) == 40163


def test_codes_expire_after_five_minutes(simulator: WeChatSimulator, clock: FakeClock) -> None:
    fresh = simulator.mint_login(APPID, user="alice").code
    stale = simulator.mint_login(APPID, user="bob").code
    clock.advance(299)
    assert exchange(simulator, fresh)[0] == 200
    clock.advance(1)
    assert errcode_of(simulator, stale) == 40029


def test_a_code_belongs_to_one_app(simulator: WeChatSimulator) -> None:
    code = simulator.mint_login(APPID, user="alice").code
    assert errcode_of(simulator, code, appid=OTHER_APPID, secret=OTHER_SECRET) == 40029
    assert exchange(simulator, code)[0] == 200


@pytest.mark.parametrize(
    ("overrides", "errcode"),
    [
        ({"appid": "wx_unknown"}, 40013),
        ({"secret": "wrong"}, 40125),
        ({"appid": ""}, 41002),
        ({"secret": ""}, 41004),
        ({"js_code": ""}, 41008),
        ({"grant_type": "client_credential"}, 40002),
        ({"js_code": "never-minted"}, 40029),
    ],
)
def test_bad_requests_get_wechats_errcodes(
    simulator: WeChatSimulator, overrides: dict[str, str], errcode: int
) -> None:
    code = simulator.mint_login(APPID, user="alice").code
    assert errcode_of(simulator, code, **overrides) == errcode


def test_wechat_errmsgs(simulator: WeChatSimulator) -> None:
    _, body = exchange(simulator, "never-minted")
    assert body["errmsg"].startswith("invalid code, rid: ")


def test_injected_faults_answer_first_and_leave_codes_usable(
    simulator: WeChatSimulator,
) -> None:
    code = simulator.mint_login(APPID, user="alice").code
    simulator.inject_errcode(-1, times=2)
    simulator.inject_errcode(45011)
    assert errcode_of(simulator, code) == -1
    assert errcode_of(simulator, code) == -1
    assert errcode_of(simulator, code) == 45011
    assert exchange(simulator, code)[0] == 200


def test_raw_faults_and_clearing(simulator: WeChatSimulator) -> None:
    simulator.inject_fault(Answer("<html>bad gateway</html>", 502), times=5)
    assert simulator.jscode2session({}) == Answer("<html>bad gateway</html>", 502)
    simulator.clear_faults()
    assert errcode_of(simulator, "x") == 40029


def test_minting_needs_a_known_app_and_a_user(simulator: WeChatSimulator) -> None:
    with pytest.raises(KeyError):
        simulator.mint_login("wx_unknown", user="alice")
    with pytest.raises(ValueError):
        simulator.mint_login(APPID)
    with pytest.raises(ValueError):
        WeChatSimulator({})


# the HTTP face, in-process


@pytest.fixture
async def http(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_simulator_app({APPID: SECRET}, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wechat") as client:
        yield client


async def test_http_login_then_jscode2session(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/simulator/login", json={"appid": APPID, "user": "alice", "nickName": "Alice"}
    )
    assert response.status_code == 200
    login = response.json()
    assert set(login) == {
        "code",
        "rawData",
        "signature",
        "encryptedData",
        "iv",
        "openid",
        "unionid",
    }
    params = {
        "appid": APPID,
        "secret": SECRET,
        "js_code": login["code"],
        "grant_type": "authorization_code",
    }
    response = await http.get("/sns/jscode2session", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    session = json.loads(response.content)
    assert session["openid"] == login["openid"]
    assert check_raw_data_signature(login["rawData"], login["signature"], session["session_key"])
    assert json.loads(login["rawData"])["nickName"] == "Alice"

    response = await http.get("/sns/jscode2session", params=params)
    assert json.loads(response.content)["errcode"] == 40163


async def test_http_login_without_unionid(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/simulator/login", json={"appid": APPID, "user": "alice", "unionid": None}
    )
    assert response.json()["unionid"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"user": "alice"},
        {"appid": "wx_unknown", "user": "alice"},
        {"appid": APPID},
        {"appid": APPID, "user": 5},
        {"appid": APPID, "user": "alice", "gender": "male"},
        {"appid": APPID, "user": "alice", "nickName": 3},
        ["not", "an", "object"],
    ],
)
async def test_http_login_rejects_bad_bodies(http: httpx.AsyncClient, body: object) -> None:
    response = await http.post("/simulator/login", json=body)
    assert response.status_code == 400
    assert "error" in response.json()


async def test_http_login_rejects_non_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/simulator/login", content=b"{nope")
    assert response.status_code == 400


async def test_http_faults(http: httpx.AsyncClient) -> None:
    assert (
        await http.post("/simulator/faults", json={"errcode": -1, "times": 2})
    ).status_code == 201
    assert (
        await http.post("/simulator/faults", json={"raw": "<html>", "status": 502})
    ).status_code == 201
    bodies = [(await http.get("/sns/jscode2session")) for _ in range(3)]
    assert [json.loads(r.content)["errcode"] for r in bodies[:2]] == [-1, -1]
    assert (bodies[2].status_code, bodies[2].text) == (502, "<html>")
    await http.post("/simulator/faults", json={"errcode": 45011, "times": 9})
    assert (await http.delete("/simulator/faults")).status_code == 204
    assert json.loads((await http.get("/sns/jscode2session")).content)["errcode"] == 41002


@pytest.mark.parametrize(
    "body",
    [
        {"errcode": -1, "times": 0},
        {"errcode": -1, "times": True},
        {"errcode": "busy"},
        {"raw": "x", "status": 99},
        {"raw": "x", "errcode": -1},
        {},
    ],
)
async def test_http_faults_reject_bad_bodies(http: httpx.AsyncClient, body: object) -> None:
    assert (await http.post("/simulator/faults", json=body)).status_code == 400


async def test_http_jscode2session_is_get_only(http: httpx.AsyncClient) -> None:
    assert (await http.post("/sns/jscode2session")).status_code == 405


# the command line


def test_cli_pairs_appids_with_secrets() -> None:
    args = parse_args(["--appid", "wxA", "--secret", "a", "--appid", "wxB", "--secret", "b"])
    assert dict(zip(args.appid, args.secret, strict=True)) == {"wxA": "a", "wxB": "b"}
    assert (args.host, args.port) == ("127.0.0.1", 9200)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--appid", "wxA"],
        ["--appid", "wxA", "--secret", "a", "--secret", "b"],
        ["--appid", "wxA", "--secret", "a", "--appid", "wxA", "--secret", "b"],
    ],
)
def test_cli_refuses_unpaired_or_repeated_apps(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2


@pytest.mark.slow
async def test_cli_serves_and_keeps_the_secret_out_of_its_access_log() -> None:
    port = free_port()
    secret = "cli-secret-" + os.urandom(8).hex()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunnel_broker.wechat.simulator",
            "--port",
            str(port),
            "--appid",
            APPID,
            "--secret",
            secret,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def login() -> httpx.Response | None:
                try:
                    minted = await client.post(
                        "/simulator/login", json={"appid": APPID, "user": "alice"}
                    )
                except httpx.TransportError:
                    return None  # not listening yet
                return minted if minted.status_code == 200 else None

            login_response: httpx.Response = await check_for(
                10.0, login, what="the simulator CLI to serve"
            )
            params = {
                "appid": APPID,
                "secret": secret,
                "js_code": login_response.json()["code"],
                "grant_type": "authorization_code",
            }
            answer = await client.get("/sns/jscode2session", params=params)
            assert "session_key" in json.loads(answer.content)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    log = output.decode()
    assert "Logging error" not in log
    assert (
        f'"GET /sns/jscode2session?appid={APPID}&secret=***&js_code=***'
        '&grant_type=authorization_code HTTP/1.1" 200' in log
    )
    assert secret not in log

"""The published Wafer SDKs, unmodified, against real broker processes (one, or three on
Redis with the business server on another pod than the sockets).

Business servers built on ``qcloud-weapp-server-sdk`` 0.8.2 (Wafer 1), with clients on
``wafer-client-sdk`` 0.8.4, run in Node (``tests/wafer/js``), and reach the broker's
Wafer endpoints as they reached Tencent's tunnel service: only their configuration
changes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.broker import app_config, new_secret
from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.servers import BrokerProcess, free_port, run_uvicorn, write_apps_file
from tests.wafer.node import NodeProcess, install_sdks, tunnel_event
from tunnel_broker.wechat.simulator import create_simulator_app

KEY = "tunnel-signature-key-1"
SERVER_HOST = "biz.example.test"


@pytest.fixture(scope="module")
def sdks() -> None:
    install_sdks()


def wafer_settings(business_port: int, **extra: Any) -> dict[str, Any]:
    return {
        "signing_keys": [KEY],
        "business_hosts": [SERVER_HOST],
        # qcloud's SDK puts no port in the receive URL it sends.
        "receive_url_origin": f"http://127.0.0.1:{business_port}",
        "heartbeat_seconds": 1,
        **extra,
    }


class Chat:
    """A qcloud business server on ``tunnel_service`` and its Wafer 1 clients, whose
    sockets reach the broker through ``socket_origins`` (a load balancer's choice)."""

    def __init__(self, business_port: int, tunnel_service: str, auth_server: str = "") -> None:
        self.server = NodeProcess(
            "qcloud",
            ["server-qcloud.js"],
            {
                "PORT": str(business_port),
                "TUNNEL_SERVER_URL": tunnel_service,
                "SERVER_HOST": SERVER_HOST,
                "TUNNEL_SIGNATURE_KEY": KEY,
                "AUTH_SERVER_URL": auth_server,
                "CHECK_LOGIN": "1" if auth_server else "0",
            },
        )
        self.business_url = f"http://127.0.0.1:{business_port}"
        self.service_url = f"{self.business_url}/tunnel"
        self.socket_origins: dict[str, str] = {}
        self.pod_urls: list[str] = []
        self.broker_url = ""
        self.clients: list[NodeProcess] = []

    async def client(self, name: str) -> NodeProcess:
        client = NodeProcess(name, ["client.js", "wafer1", "--reconnect-increase-ms", "100"])
        self.clients.append(client)
        await client.start()
        if self.socket_origins:
            await client.ok(cmd="wx", socketOrigins=self.socket_origins)
        return client

    async def open(self, client: NodeProcess, known: set[str]) -> str:
        """Open ``client``'s tunnel; its id as the business server saw it connect."""
        await client.ok(cmd="open", url=self.service_url)
        await client.wait(tunnel_event("connect"), what="connect")
        line = await self.server.wait(
            lambda o: o.get("event") == "connect" and o["tunnelId"] not in known,
            what="connect event",
        )
        return str(line["tunnelId"])

    async def stop(self) -> None:
        for process in [*self.clients, self.server]:
            await process.stop()


@pytest.fixture
async def one_broker(tmp_path: Path, sdks: None) -> AsyncIterator[Chat]:
    business_port = free_port()
    app = app_config("demo", "http://127.0.0.1:9/unused", new_secret())
    app["wafer"] = wafer_settings(business_port)
    apps = write_apps_file(tmp_path / "apps.json", [app])
    apps.chmod(0o600)
    broker = BrokerProcess(
        ["--apps-file", str(apps)], env={"TB_SECRET_KEY": "wafer-test-secret-0123456789"}
    )
    await broker.start()
    chat = Chat(business_port, f"{broker.url}/wafer/demo")
    try:
        await chat.server.start()
        yield chat
    finally:
        await chat.stop()
        broker.stop()


APPID, SECRET = "wx0123456789abcdef", "wafer-test-app-secret"


@pytest.fixture
async def logging_in(tmp_path: Path, sdks: None) -> AsyncIterator[tuple[Chat, Any]]:
    """A broker that is also the qcloud server's auth server, its WeChat a simulator."""
    simulator = create_simulator_app({APPID: SECRET})
    async with run_uvicorn(simulator) as wechat_port:
        business_port = free_port()
        app = app_config("demo", "http://127.0.0.1:9/unused", new_secret())
        app["wafer"] = wafer_settings(business_port)
        app.update(
            wechat_appid=APPID,
            wechat_secret=SECRET,
            wechat_api_base_url=f"http://127.0.0.1:{wechat_port}",
        )
        apps = write_apps_file(tmp_path / "apps.json", [app])
        apps.chmod(0o600)
        broker = BrokerProcess(
            ["--apps-file", str(apps)], env={"TB_SECRET_KEY": "wafer-test-secret-0123456789"}
        )
        await broker.start()
        chat = Chat(business_port, f"{broker.url}/wafer/demo", f"{broker.url}/wafer/demo/auth")
        chat.broker_url = broker.url
        try:
            await chat.server.start()
            yield chat, simulator.state.simulator
        finally:
            await chat.stop()
            broker.stop()


@pytest.fixture
async def three_pods(tmp_path: Path, redis_server: RedisServer, sdks: None) -> AsyncIterator[Chat]:
    """The business server calls pod 1; its clients' sockets land on pod 0."""
    business_port = free_port()
    app = {"wafer": wafer_settings(business_port)}
    async with cluster_of(tmp_path, redis_server, app=app) as cluster:
        chat = Chat(business_port, f"{cluster.pods[1].url}/wafer/demo")
        ws = [f"ws://127.0.0.1:{pod.port}" for pod in cluster.pods]
        chat.socket_origins = {ws[1]: ws[0]}
        chat.pod_urls = [pod.url for pod in cluster.pods]
        try:
            await chat.server.start()
            yield chat
        finally:
            await chat.stop()


def server_saw(kind: str, tunnel_id: str) -> Any:
    return lambda o: o.get("event") == kind and o.get("tunnelId") == tunnel_id


async def test_two_wafer1_clients_chat_through_a_qcloud_business_server(
    one_broker: Chat,
) -> None:
    await chat_scenario(one_broker)


async def test_the_same_chat_with_pushes_sent_to_another_pod_than_the_sockets(
    three_pods: Chat,
) -> None:
    await chat_scenario(three_pods)
    accepted = [await accepted_sockets(url) for url in three_pods.pod_urls]
    assert accepted[0] >= 3 and accepted[1] == 0, accepted


async def accepted_sockets(pod_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{pod_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tb_connects_total{") and 'result="accepted"' in line
    )


async def chat_scenario(chat: Chat) -> None:
    a, b = await chat.client("a"), await chat.client("b")
    tunnel_a = await chat.open(a, set())
    tunnel_b = await chat.open(b, {tunnel_a})
    assert tunnel_a.startswith("wtn_") and tunnel_b != tunnel_a
    await a.wait(tunnel_event("people", total=2), what="two people")

    # A client's message reaches the business server, whose broadcast reaches both.
    mark_a, mark_b = len(a.lines), len(b.lines)
    await a.ok(cmd="emit", type="speak", content={"word": "hi"})
    said = await chat.server.wait(lambda o: o.get("event") == "message", what="message")
    assert (said["tunnelId"], said["type"], said["content"]) == (tunnel_a, "speak", {"word": "hi"})
    await a.wait(tunnel_event("speak", word="hi"), after=mark_a, what="a hears hi")
    await b.wait(tunnel_event("speak", word="hi"), after=mark_b, what="b hears hi")
    pushed = await chat.server.wait(lambda o: o.get("event") == "push", what="push answer")
    assert pushed["ok"], pushed

    # The heartbeat (1 s, set by the broker's timeout packet) keeps the sockets up.
    pongs = a.count(lambda o: o.get("event") == "frame" and o.get("data") == "pong")
    await asyncio.sleep(2.5)
    assert a.count(lambda o: o.get("event") == "frame" and o.get("data") == "pong") >= pongs + 2
    assert a.count(tunnel_event("reconnecting")) == 0

    # The business server closes b's tunnel: b is told first, and does not reconnect.
    await chat.server.ok(cmd="closeTunnel", tunnelId=tunnel_b)
    await b.wait(tunnel_event("close"), what="b closed")
    await chat.server.wait(server_saw("close", tunnel_b), what="b's close event")
    await asyncio.sleep(0.5)
    assert b.count(tunnel_event("reconnecting")) == 0
    assert (await b.ok(cmd="status"))["status"] == "CLOSED"

    # a's socket drops: exactly one close event; a reconnects (a new tunnel) and chats.
    await a.ok(cmd="socket", action="drop")
    await a.wait(tunnel_event("reconnect"), seconds=15, what="a reconnected")
    await chat.server.wait(server_saw("close", tunnel_a), what="a's close event")
    again = await chat.server.wait(
        lambda o: o.get("event") == "connect" and o["tunnelId"] not in (tunnel_a, tunnel_b),
        what="a's new tunnel",
    )
    mark_a = len(a.lines)
    await a.ok(cmd="emit", type="speak", content={"word": "again"})
    await a.wait(tunnel_event("speak", word="again"), after=mark_a, what="a hears again")
    await asyncio.sleep(0.3)
    assert chat.server.count(server_saw("close", tunnel_a)) == 1
    assert chat.server.count(server_saw("close", tunnel_b)) == 1
    assert again["tunnelId"].startswith("wtn_")


def wx_user(login: Any) -> dict[str, Any]:
    """What ``wx.getUserInfo`` answers after the simulated ``wx.login``."""
    return {
        "encryptedData": login.encrypted_data,
        "iv": login.iv,
        "rawData": login.raw_data,
        "signature": login.signature,
        "userInfo": json.loads(login.raw_data),
    }


async def test_a_qcloud_business_server_logs_users_in_through_the_broker(
    logging_in: tuple[Chat, Any],
) -> None:
    """The auth-server interface: the business server's LoginService hands the client's
    login to the broker (qcloud.cam.id_skey), and checks its session on every tunnel
    request (qcloud.cam.auth), as it did with Tencent's auth server."""
    chat, simulator = logging_in
    client = await chat.client("alice")
    minted = simulator.mint_login(APPID, user="alice", profile={"nickName": "阿丽丝"})
    await client.ok(cmd="wx", code=minted.code, userInfo=wx_user(minted))
    await client.ok(cmd="login", loginUrl=f"{chat.business_url}/login")
    logged = await chat.server.wait(lambda o: o.get("event") == "login", what="login")
    assert logged["ok"], logged
    assert logged["userInfo"]["openId"] == minted.openid
    assert logged["userInfo"]["nickName"] == "阿丽丝"
    session = await client.ok(cmd="session")
    assert session["id"] != session["skey"]

    # The tunnel request is checked against the broker (CHECK_LOGIN), and the business
    # server learns who the tunnel's user is.
    tunnel_id = await chat.open(client, set())
    requested = await chat.server.wait(lambda o: o.get("event") == "request", what="request")
    assert requested["tunnelId"] == tunnel_id
    assert requested["userInfo"]["openId"] == minted.openid

    # A session the broker does not know (revoked, expired) makes the client log in again.
    await client.ok(cmd="setSession", session={**session, "skey": "x" * 32})
    again = simulator.mint_login(APPID, user="alice")
    await client.ok(cmd="wx", code=again.code, userInfo=wx_user(again))
    await client.ok(cmd="request", url=f"{chat.business_url}/user")
    refused = await chat.server.wait(lambda o: o.get("event") == "check" and not o["ok"])
    assert refused["error"]["type"] == "ERR_INVALID_SESSION", refused
    assert chat.server.count(lambda o: o.get("event") == "login" and o["ok"]) == 2


async def test_a_failed_login_reaches_a_wafer1_client_with_its_reason(
    logging_in: tuple[Chat, Any],
) -> None:
    """wafer-client-sdk logging in on the broker's own login endpoint, with a code WeChat
    refuses: the SDK reports the broker's reason, not that the server lacks the SDK."""
    chat, simulator = logging_in
    client = await chat.client("mallory")
    minted = simulator.mint_login(APPID, user="mallory")
    await client.ok(cmd="wx", code="not-a-code", userInfo=wx_user(minted))
    answer = await client.command(cmd="login", loginUrl=f"{chat.broker_url}/v1/wechat/demo/login")
    assert not answer["ok"]
    error = answer["error"]
    assert error["type"] == "ERR_LOGIN_MISSING_SESSION", error
    assert "ERR_LOGIN_FAILED" in error["message"] and "wx.login" in error["message"], error

"""The Wafer 1 generation, published and unmodified, against real broker processes (one,
or three on Redis with the business server on another pod than the sockets): business
servers on ``qcloud-weapp-server-sdk`` 0.8.2 with clients on ``wafer-client-sdk`` 0.8.4,
in Node (``tests/wafer/js``), reach the broker's Wafer endpoints (and its auth-server
interface) as they reached Tencent's services: only their configuration changes. The
wafer2 generation: ``test_wafer2_sdks.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import app_config, new_secret
from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.servers import BrokerProcess, free_port, run_uvicorn, write_apps_file
from tests.wafer.chat import (
    APPID,
    SECRET,
    Chat,
    chat_scenario,
    cross_pod_scenario,
    wafer_settings,
    wx_user,
)
from tests.wafer.node import install_sdks
from tunnel_broker.wechat.simulator import create_simulator_app


@pytest.fixture(scope="module")
def sdks() -> None:
    install_sdks()


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
    chat = Chat("qcloud", business_port, f"{broker.url}/wafer/demo")
    try:
        await chat.server.start()
        yield chat
    finally:
        await chat.stop()
        broker.stop()


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
        chat = Chat(
            "qcloud", business_port, f"{broker.url}/wafer/demo", f"{broker.url}/wafer/demo/auth"
        )
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
        chat = Chat("qcloud", business_port, f"{cluster.pods[1].url}/wafer/demo")
        chat.behind_load_balancer(cluster.pods)
        try:
            await chat.server.start()
            yield chat
        finally:
            await chat.stop()


async def test_two_wafer1_clients_chat_through_a_qcloud_business_server(
    one_broker: Chat,
) -> None:
    await chat_scenario(one_broker)


async def test_the_same_chat_with_pushes_sent_to_another_pod_than_the_sockets(
    three_pods: Chat,
) -> None:
    await cross_pod_scenario(three_pods)


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

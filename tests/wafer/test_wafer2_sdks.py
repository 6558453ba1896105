"""The wafer2 generation, published and unmodified, against real broker processes: a
business server on ``wafer-node-sdk`` 1.4.5 (the quickstart: Koa, its logins in a real
MariaDB, its WeChat a simulator) with clients on ``wafer2-client-sdk`` 2.1.0, on one
broker and on three pods on Redis with the business server on another pod than the
sockets. Only their configuration names the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import app_config, new_secret
from tests.support.cluster import cluster_of
from tests.support.mariadb import MariaDBServer
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
from tests.wafer.node import install_sdks, tunnel_event
from tunnel_broker.wechat.simulator import create_simulator_app


@pytest.fixture(scope="module")
def sdks() -> None:
    install_sdks()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    server = MariaDBServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def wechat() -> AsyncIterator[tuple[str, Any]]:
    simulator = create_simulator_app({APPID: SECRET})
    async with run_uvicorn(simulator) as port:
        yield f"http://127.0.0.1:{port}", simulator.state.simulator


@pytest.fixture
async def one_broker(
    tmp_path: Path, sdks: None, mariadb: MariaDBServer, wechat: tuple[str, Any]
) -> AsyncIterator[Chat]:
    """The broker is also a login endpoint for the same WeChat app."""
    business_port = free_port()
    app = app_config("demo", "http://127.0.0.1:9/unused", new_secret())
    app["wafer"] = wafer_settings(business_port)
    app.update(wechat_appid=APPID, wechat_secret=SECRET, wechat_api_base_url=wechat[0])
    apps = write_apps_file(tmp_path / "apps.json", [app])
    apps.chmod(0o600)
    broker = BrokerProcess(
        ["--apps-file", str(apps)], env={"TB_SECRET_KEY": "wafer-test-secret-0123456789"}
    )
    await broker.start()
    chat = Chat("wafer2", business_port, f"{broker.url}/wafer/demo", "", mariadb.port, wechat)
    chat.broker_url = broker.url
    try:
        await chat.server.start()
        yield chat
    finally:
        await chat.stop()
        broker.stop()


@pytest.fixture
async def three_pods(
    tmp_path: Path,
    redis_server: RedisServer,
    sdks: None,
    mariadb: MariaDBServer,
    wechat: tuple[str, Any],
) -> AsyncIterator[Chat]:
    """The business server calls pod 1; its clients' sockets land on pod 0."""
    business_port = free_port()
    app = {"wafer": wafer_settings(business_port)}
    async with cluster_of(tmp_path, redis_server, app=app) as cluster:
        tunnel_service = f"{cluster.pods[1].url}/wafer/demo"
        chat = Chat("wafer2", business_port, tunnel_service, "", mariadb.port, wechat)
        chat.behind_load_balancer(cluster.pods)
        try:
            await chat.server.start()
            yield chat
        finally:
            await chat.stop()


async def test_two_wafer2_clients_chat_through_a_wafer_node_sdk_business_server(
    one_broker: Chat,
) -> None:
    await chat_scenario(one_broker)


async def test_the_same_wafer2_chat_with_pushes_sent_to_another_pod_than_the_sockets(
    three_pods: Chat,
) -> None:
    await cross_pod_scenario(three_pods)


async def test_the_business_server_knows_each_tunnels_user_and_sessions_renew(
    one_broker: Chat,
) -> None:
    """wafer-node-sdk's own login (code exchanged with WeChat, user kept in MySQL) is what
    its getTunnelUrl checks before asking the broker for a tunnel; a session it no longer
    knows makes the wafer2 client log in again with the code alone, by itself."""
    chat = one_broker
    client = await chat.client("chen")
    logged = await chat.log_in(client, nickName="陈小明")
    assert logged["userinfo"]["userinfo"]["nickName"] == "陈小明"

    await client.ok(cmd="open", url=chat.service_url)
    await client.wait(tunnel_event("connect"), what="connect")
    requested = await chat.server.wait(lambda o: o.get("event") == "request", what="request")
    assert requested["userinfo"]["nickName"] == "陈小明"
    assert requested["tunnel"]["connectUrl"].startswith("ws://127.0.0.1:")
    assert requested["tunnelId"].startswith("wtn_")

    session = await client.ok(cmd="session")
    await client.ok(cmd="setSession", session={**session, "skey": "f" * 40})
    minted = chat.simulator.mint_login(APPID, user="chen")  # type: ignore[union-attr]
    await client.ok(cmd="wx", code=minted.code)
    user = await client.ok(cmd="request", url=f"{chat.business_url}/weapp/user", login=True)
    assert user["data"]["data"]["nickName"] == "陈小明", user
    assert (await client.ok(cmd="session"))["skey"] not in ("f" * 40, session["skey"])


async def test_a_wafer2_client_logs_in_on_the_broker_and_a_code_alone_keeps_its_profile(
    one_broker: Chat,
) -> None:
    """wafer2-client-sdk pointed at the broker's login endpoint: a full login, then
    ``loginWithCode`` (what the SDK also does by itself after a 401) answers the profile
    of that login, as wafer-node-sdk did from its MySQL table."""
    chat = one_broker
    client = await chat.client("lin")
    login_url = f"{chat.broker_url}/v1/wechat/demo/login"
    full = chat.simulator.mint_login(APPID, user="lin", profile={"nickName": "林"})  # type: ignore[union-attr]
    await client.ok(cmd="wx", code=full.code, userInfo=wx_user(full))
    first = await client.ok(cmd="login", loginUrl=login_url)
    assert first["userInfo"]["nickName"] == "林", first
    assert first["userInfo"]["openId"] == full.openid, first

    again = chat.simulator.mint_login(APPID, user="lin")  # type: ignore[union-attr]
    await client.ok(cmd="wx", code=again.code)
    second = await client.ok(cmd="loginWithCode", loginUrl=login_url)
    assert second["userInfo"]["nickName"] == "林", second
    assert second["userInfo"]["openId"] == full.openid, second
    assert second["session"]["skey"] not in ("", first["session"]["skey"]), second

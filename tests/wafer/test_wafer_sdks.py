"""The published Wafer SDKs, unmodified, against real broker processes (one, or three on
Redis with the business server on another pod than the sockets).

Business servers built on ``qcloud-weapp-server-sdk`` 0.8.2 (Wafer 1), with clients on
``wafer-client-sdk`` 0.8.4, run in Node (``tests/wafer/js``), and reach the broker's
Wafer endpoints as they reached Tencent's tunnel service: only their configuration
changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.broker import app_config, new_secret
from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.servers import BrokerProcess, free_port, write_apps_file
from tests.wafer.node import NodeProcess, install_sdks, tunnel_event

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

    def __init__(self, business_port: int, tunnel_service: str) -> None:
        self.server = NodeProcess(
            "qcloud",
            ["server-qcloud.js"],
            {
                "PORT": str(business_port),
                "TUNNEL_SERVER_URL": tunnel_service,
                "SERVER_HOST": SERVER_HOST,
                "TUNNEL_SIGNATURE_KEY": KEY,
                "CHECK_LOGIN": "0",
            },
        )
        self.service_url = f"http://127.0.0.1:{business_port}/tunnel"
        self.socket_origins: dict[str, str] = {}
        self.pod_urls: list[str] = []
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

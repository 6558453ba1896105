"""The chat both Wafer demos are (the official qcloud demo and the wafer2 quickstart): a
business server on one of the two server SDKs, its mini-programs on the matching client
SDK, and the scenario every Wafer SDK test runs through it."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import httpx

from tests.wafer.node import Line, NodeProcess, tunnel_event

KEY = "tunnel-signature-key-1"
SERVER_HOST = "biz.example.test"
APPID, SECRET = "wx0123456789abcdef", "wafer-test-app-secret"

Generation = Literal["qcloud", "wafer2"]


def wafer_settings(business_port: int, **extra: Any) -> dict[str, Any]:
    return {
        "signing_keys": [KEY],
        "business_hosts": [SERVER_HOST],
        # qcloud's SDK puts no port in the receive URL it sends.
        "receive_url_origin": f"http://127.0.0.1:{business_port}",
        "heartbeat_seconds": 1,
        **extra,
    }


def wx_user(login: Any) -> dict[str, Any]:
    """What ``wx.getUserInfo`` answers after the simulated ``wx.login``."""
    return {
        "encryptedData": login.encrypted_data,
        "iv": login.iv,
        "rawData": login.raw_data,
        "signature": login.signature,
        "userInfo": json.loads(login.raw_data),
    }


class Chat:
    """A business server of ``generation`` on ``tunnel_service`` and its clients, whose
    sockets reach the broker through ``socket_origins`` (a load balancer's choice).

    qcloud: ``qcloud-weapp-server-sdk`` (express, the Wafer 1 demo) with
    ``wafer-client-sdk`` clients; its logins go to ``auth_server`` when one is given.
    wafer2: ``wafer-node-sdk`` (Koa, the quickstart) with ``wafer2-client-sdk`` clients; it
    keeps its logins in MySQL (``mysql_port``) and exchanges codes with WeChat
    (``wechat``, a simulator), and every client logs in before it opens its tunnel.
    """

    def __init__(
        self,
        generation: Generation,
        business_port: int,
        tunnel_service: str,
        auth_server: str = "",
        mysql_port: int = 0,
        wechat: tuple[str, Any] | None = None,
    ) -> None:
        self.generation = generation
        self.business_url = f"http://127.0.0.1:{business_port}"
        env = {
            "PORT": str(business_port),
            "TUNNEL_SERVER_URL": tunnel_service,
            "SERVER_HOST": SERVER_HOST,
            "TUNNEL_SIGNATURE_KEY": KEY,
        }
        if generation == "qcloud":
            self.server = NodeProcess(
                "qcloud",
                ["server-qcloud.js"],
                {**env, "AUTH_SERVER_URL": auth_server, "CHECK_LOGIN": "1" if auth_server else "0"},
            )
            self.service_url = f"{self.business_url}/tunnel"
            self.login_url = f"{self.business_url}/login"
        else:
            assert mysql_port and wechat, "wafer-node-sdk needs MySQL and WeChat"
            self.server = NodeProcess(
                "wafer2",
                ["server-wafer2.js"],
                {
                    **env,
                    "APP_ID": APPID,
                    "APP_SECRET": SECRET,
                    "WECHAT_API_BASE": wechat[0],
                    "MYSQL_PORT": str(mysql_port),
                    "INIT_DB": "1",
                },
            )
            self.service_url = f"{self.business_url}/weapp/tunnel"
            self.login_url = f"{self.business_url}/weapp/login"
        self.simulator = wechat[1] if wechat else None
        self.socket_origins: dict[str, str] = {}
        self.pod_urls: list[str] = []
        self.broker_url = ""
        self.clients: list[NodeProcess] = []

    def behind_load_balancer(self, pods: list[Any]) -> None:
        """The clients' sockets land on pod 0 whatever URL they are given (the business
        server gives them pod 1's, where it calls the tunnel service)."""
        ws = [f"ws://127.0.0.1:{pod.port}" for pod in pods]
        self.socket_origins = {ws[1]: ws[0]}
        self.pod_urls = [pod.url for pod in pods]

    async def client(self, name: str) -> NodeProcess:
        sdk = "wafer1" if self.generation == "qcloud" else "wafer2"
        client = NodeProcess(name, ["client.js", sdk, "--reconnect-increase-ms", "100"])
        self.clients.append(client)
        await client.start()
        if self.socket_origins:
            await client.ok(cmd="wx", socketOrigins=self.socket_origins)
        return client

    async def log_in(self, client: NodeProcess, **profile: Any) -> Line:
        """Log ``client`` in at the business server with a fresh WeChat login."""
        assert self.simulator is not None
        minted = self.simulator.mint_login(APPID, user=client.name, profile=profile or None)
        await client.ok(cmd="wx", code=minted.code, userInfo=wx_user(minted))
        mark = len(self.server.lines)
        await client.ok(cmd="login", loginUrl=self.login_url)
        logged: Line = await self.server.wait(
            lambda o: o.get("event") == "login", what="login", after=mark
        )
        assert logged["ok"], logged
        return logged

    async def open(self, client: NodeProcess, known: set[str]) -> str:
        """Open ``client``'s tunnel; its id as the business server saw it connect."""
        if self.generation == "wafer2":
            await self.log_in(client)
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


def server_saw(kind: str, tunnel_id: str) -> Any:
    return lambda o: o.get("event") == kind and o.get("tunnelId") == tunnel_id


async def accepted_sockets(pod_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{pod_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tb_connects_total{") and 'result="accepted"' in line
    )


async def cross_pod_scenario(chat: Chat) -> None:
    """``chat_scenario`` with the sockets on pod 0 and the business server's calls on pod 1."""
    await chat_scenario(chat)
    accepted = [await accepted_sockets(url) for url in chat.pod_urls]
    assert accepted[0] >= 3 and accepted[1] == 0, accepted


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

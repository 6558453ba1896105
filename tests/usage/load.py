"""A scripted load for usage tests, and what it must show: tunnels, client messages of
known sizes, pushes to a tunnel, a user, a group and all, logins, and webhooks that fail
on purpose before they are acknowledged. Shared by the memory test (one broker) and the
cluster test (three pods on one Redis): the same script, the same expectations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for

APPID = "wx0123456789abcdef"
WECHAT_SECRET = "wechat-app-secret-never-shown"

# Client messages: ASCII text, text of two-byte characters, binary.
CLIENT_MESSAGES: list[str | bytes] = ["a" * 10, "é" * 5, b"\x00\x01" * 7, "hello"]


def size(payload: str | bytes) -> int:
    return len(payload.encode() if isinstance(payload, str) else payload)


def wechat_app(simulator_url: str) -> dict[str, Any]:
    return {
        "wechat_appid": APPID,
        "wechat_secret": WECHAT_SECRET,
        "wechat_api_base_url": simulator_url,
    }


@dataclass
class Expected:
    """What the load did, counted by the test itself."""

    counts: dict[str, int] = field(default_factory=dict)
    tunnel_seconds: float = 0.0
    peak_tunnels: int = 0

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount


@dataclass
class Pod:
    """Where one part of the load goes: a broker's URLs and the app's API client there."""

    url: str
    api: httpx.AsyncClient

    def ws_url(self, connect_url: str) -> str:
        path = connect_url.split("/v1/connect", 1)[1]
        return "ws" + self.url[len("http") :] + "/v1/connect" + path


async def receive(ws: ClientConnection, expected: str) -> None:
    got = await asyncio.wait_for(ws.recv(), 10)
    assert got == expected


async def run_load(
    pods: Sequence[Pod],
    receiver: WebhookReceiver,
    simulator: Any,
    login_http: Callable[[int], httpx.AsyncClient],
) -> Expected:
    """Three tunnels (users u0, u0, u1; t1 and t2 in group g), each on pod i % len(pods);
    every client message from every tunnel; pushes through pod 0; two logins (one more
    refused); webhooks failing three times before they are acknowledged."""
    done = Expected()
    count = done.add
    specs = [("u0", []), ("u0", ["g"]), ("u1", ["g"])]
    sockets: list[ClientConnection] = []
    tunnel_ids: list[str] = []
    opened: list[float] = []
    for index, (user, groups) in enumerate(specs):
        pod = pods[index % len(pods)]
        issued = await pod.api.post("/v1/tunnels", json={"user_id": user, "groups": groups})
        assert issued.status_code == 201, issued.text
        count("api_calls")
        tunnel_ids.append(issued.json()["tunnel_id"])
        sockets.append(await connect(pod.ws_url(issued.json()["connect_url"]), open_timeout=10))
        opened.append(time.monotonic())
        count("tunnels_opened")
    done.peak_tunnels = len(sockets)
    await check_for(10, lambda: len(_of(receiver, "tunnel.connected")) == len(sockets))

    # The receiver fails, then comes back: every failed attempt is retried.
    failed_before = receiver.attempts
    receiver.behaviour = "status:503"
    for ws in sockets:
        for payload in CLIENT_MESSAGES:
            await ws.send(payload)
            count("messages_in")
            count("bytes_in", size(payload))
    await check_for(10, lambda: receiver.attempts - failed_before >= 3, what="three failures")
    receiver.behaviour = "ok"
    wanted = len(sockets) * len(CLIENT_MESSAGES)
    await check_for(15, lambda: len(_of(receiver, "tunnel.message")) == wanted, what="messages")

    # Pushes through pod 0 to a tunnel (on the last pod), a user, a group, everyone.
    targets: list[tuple[dict[str, Any], list[int], str]] = [
        ({"tunnels": [tunnel_ids[2]]}, [2], "to-one"),
        ({"users": ["u0"]}, [0, 1], "to-user-é"),
        ({"groups": ["g"]}, [1, 2], "to-group"),
        ({"all": True}, [0, 1, 2], "to-everyone!"),
    ]
    for to, reached, data in targets:
        sent = await pods[0].api.post("/v1/messages", json={"messages": [{"to": to, "data": data}]})
        assert sent.status_code == 200, sent.text
        count("api_calls")
        count("pushes")
        count("push_bytes", size(data))
        for index in reached:
            await receive(sockets[index], data)
        count("messages_out", len(reached))
        count("bytes_out", len(reached) * size(data))

    # Logins: two that succeed (on different pods), one with a used code that does not.
    codes = [simulator.mint_login(APPID, user=f"user{n}").code for n in range(2)]
    for n, code in enumerate(codes):
        async with login_http(n % len(pods)) as http:
            ok = await http.get("/v1/wechat/demo/login", headers={"X-WX-Code": code})
            assert ok.status_code == 200, ok.text
            count("logins")
    async with login_http(0) as http:
        refused = await http.get("/v1/wechat/demo/login", headers={"X-WX-Code": codes[0]})
        assert refused.status_code == 401

    for ws, since in zip(sockets, opened, strict=True):
        await ws.close()
        done.tunnel_seconds += time.monotonic() - since
    await check_for(10, lambda: len(_of(receiver, "tunnel.closed")) == len(sockets), what="closes")

    # What the webhooks did, as the receiver saw it (it answers every attempt).
    count("webhook_requests", receiver.attempts)
    count("webhook_failures", receiver.attempts - len(receiver.deliveries))
    count("webhook_retries", receiver.attempts - len(receiver.deliveries))
    count("webhook_events", len(receiver.events))
    return done


def _of(receiver: WebhookReceiver, kind: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events if e["type"] == kind]


def mismatches(
    totals: dict[str, Any], done: Expected, api_call_slack: int = 0
) -> dict[str, tuple[int, int]]:
    """Where usage totals differ from what was done: name -> (shown, done). API calls:
    the usage queries themselves may add up to ``api_call_slack``."""
    wrong = {}
    for name, value in done.counts.items():
        got = totals.get(name, 0)
        slack = api_call_slack if name == "api_calls" else 0
        if not value <= got <= value + slack:
            wrong[name] = (got, value)
    return wrong


def matches(totals: dict[str, Any], done: Expected, api_call_slack: int = 0) -> bool:
    return not mismatches(totals, done, api_call_slack)


def assert_tunnel_minutes(totals: dict[str, Any], done: Expected) -> None:
    shown = totals["tunnel_minutes"] * 60
    assert abs(shown - done.tunnel_seconds) <= 0.3 * 3 + 0.05 * done.tunnel_seconds, (
        shown,
        done.tunnel_seconds,
    )

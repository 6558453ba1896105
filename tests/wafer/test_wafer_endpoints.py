"""The Wafer endpoints and sockets, driven from Python: a business server that speaks the
legacy envelope (as the SDKs do), real sockets speaking the packets, and every kind of
bad input answered with the legacy error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import BrokerHandle, app_config, new_secret, run_broker
from tests.support.servers import run_uvicorn
from tests.support.waiting import check_for
from tests.wafer.legacy import HOST, KEY, LegacyServer, signed
from tunnel_broker.wafer import envelope


@dataclass
class Wafer:
    broker: BrokerHandle
    business: LegacyServer
    http: httpx.AsyncClient

    async def call(self, path: str, data: Any, key: str = KEY, host: str = HOST) -> Any:
        response = await self.http.post(f"/wafer/demo{path}", json=signed(data, key, host))
        assert response.status_code == 200
        return response.json()

    async def tunnel(self) -> tuple[str, str]:
        answer = await self.call(
            "/get/wsurl", {"receiveUrl": f"https://{HOST}/weapp/tunnel", "protocolType": "wss"}
        )
        assert answer["code"] == 0, answer
        assert answer["signature"] == envelope.sign(answer["data"], KEY)
        data = json.loads(answer["data"])
        return data["tunnelId"], data["connectUrl"]

    async def push(self, packets: list[dict[str, Any]]) -> Any:
        return await self.call("/ws/push", packets)


@pytest.fixture
async def wafer() -> AsyncIterator[Wafer]:
    business = LegacyServer()
    receiver = Starlette(routes=[Route("/weapp/tunnel", business.receive, methods=["POST"])])
    async with run_uvicorn(receiver) as port:
        app = app_config("demo", "http://127.0.0.1:9/unused", new_secret())
        app["wafer"] = {
            "signing_keys": [KEY],
            "business_hosts": [HOST],
            "receive_url_origin": f"http://127.0.0.1:{port}",
        }
        native = app_config("native", "http://127.0.0.1:9/unused", new_secret())
        async with (
            run_broker([app, native]) as broker,
            httpx.AsyncClient(base_url=broker.url) as http,
        ):
            yield Wafer(broker, business, http)


async def legacy_socket(connect_url: str) -> ClientConnection:
    return await connect(connect_url, open_timeout=10, close_timeout=2)


async def test_a_tunnel_relays_packets_and_reports_events_in_the_legacy_shape(
    wafer: Wafer,
) -> None:
    tunnel_id, url = await wafer.tunnel()
    assert tunnel_id.startswith("wtn_") and "/wafer/v1/connect?token=" in url
    async with await legacy_socket(url) as ws:
        await check_for(5, lambda: wafer.business.of(tunnel_id) == [("connect", None)])
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        await ws.send('message:{"type":"speak","content":{"word":"hi: there"}}')
        await check_for(5, lambda: len(wafer.business.of(tunnel_id)) == 2)
        assert wafer.business.of(tunnel_id)[1] == (
            "message",
            '{"type":"speak","content":{"word":"hi: there"}}',
        )
        content = json.dumps({"type": "speak", "content": {"who": "x"}})
        answer = await wafer.push(
            [{"tunnelIds": [tunnel_id], "type": "message", "content": content}]
        )
        assert answer == {"code": 0, "message": "ok", "data": {"invalidTunnelIds": []}}
        assert await asyncio.wait_for(ws.recv(), 5) == f"message:{content}"
        # The business server closes it: the client hears "close" first (it would
        # reconnect after a bare close), then the socket closes.
        answer = await wafer.push([{"tunnelIds": [tunnel_id, "wtn_gone"], "type": "close"}])
        assert answer["data"] == {"invalidTunnelIds": ["wtn_gone"]}
        assert await asyncio.wait_for(ws.recv(), 5) == "close"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    await check_for(5, lambda: wafer.business.of(tunnel_id)[-1] == ("close", None))
    assert [t for t, _ in wafer.business.of(tunnel_id)] == ["connect", "message", "close"]
    assert wafer.business.bad_signatures == 0


async def test_events_are_retried_until_the_business_server_answers_code_0(wafer: Wafer) -> None:
    # An HTTP 200 is not enough: the SDK apps answer 200 with a non-zero code on failure.
    wafer.business.answers = [{"code": -1, "error": "handler threw"}, {"code": 9004}]
    tunnel_id, url = await wafer.tunnel()
    async with await legacy_socket(url) as ws:
        for n in range(3):
            await ws.send(f'message:{{"type":"n","content":{n}}}')
        await check_for(10, lambda: len(wafer.business.of(tunnel_id)) == 4)
    kinds = wafer.business.of(tunnel_id)
    assert kinds[0] == ("connect", None)
    assert [json.loads(c)["content"] for _, c in kinds[1:]] == [0, 1, 2]


@pytest.mark.parametrize(
    "frame",
    ['message:"a string"', "message:[1]", "message:{not json", "message", b"\x00binary"],
)
async def test_a_packet_the_sdks_would_choke_on_closes_the_socket(
    wafer: Wafer, frame: str | bytes
) -> None:
    tunnel_id, url = await wafer.tunnel()
    async with await legacy_socket(url) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    await check_for(5, lambda: wafer.business.of(tunnel_id)[-1][0] == "close")
    assert [t for t, _ in wafer.business.of(tunnel_id)] == ["connect", "close"]


async def test_each_protocol_only_on_its_own_endpoint(wafer: Wafer) -> None:
    _, url = await wafer.tunnel()
    issued = await wafer.broker.client("native").issue("u1")
    native_on_wafer = url.split("?")[0] + "?" + issued["connect_url"].split("?")[1]
    wafer_on_native = issued["connect_url"].split("?")[0] + "?" + url.split("?")[1]
    for wrong in (native_on_wafer, wafer_on_native):
        async with await legacy_socket(wrong) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize(
    ("path", "data", "kwargs", "code"),
    [
        ("/get/wsurl", {"receiveUrl": f"https://{HOST}/t"}, {"key": "wrong-key-0001"}, 4002),
        ("/get/wsurl", {"receiveUrl": f"https://{HOST}/t"}, {"host": "other.test"}, 4001),
        ("/get/wsurl", "not json", {}, 4003),
        ("/get/wsurl", {"receiveUrl": 5}, {}, 4003),
        ("/get/wsurl", {"receiveUrl": "https://elsewhere.test/t"}, {}, 4003),
        ("/ws/push", {"tunnelIds": ["x"]}, {}, 4003),
        ("/ws/push", [{"tunnelIds": ["x"], "type": "message", "content": "[1]"}], {}, 4003),
        ("/ws/push", [{"tunnelIds": [], "type": "close"}], {}, 4003),
        ("/ws/push", [{"tunnelIds": [1], "type": "close"}], {}, 4003),
        ("/ws/push", [{"tunnelIds": ["x"], "type": "shout"}], {}, 4003),
    ],
)
async def test_bad_legacy_calls_get_the_legacy_error(
    wafer: Wafer, path: str, data: Any, kwargs: dict[str, str], code: int
) -> None:
    answer = await wafer.call(path, data, **kwargs)
    assert answer["code"] == code and isinstance(answer["message"], str), answer
    assert KEY not in json.dumps(answer)


async def test_apps_not_in_wafer_mode_have_no_wafer_endpoints(wafer: Wafer) -> None:
    for app in ("native", "nobody"):
        response = await wafer.http.post(f"/wafer/{app}/get/wsurl", content=b"{}")
        assert response.status_code == 200 and response.json()["code"] == 4004
    response = await wafer.http.post("/wafer/demo/ws/push", content=b"\x00not json")
    assert response.json()["code"] == 4000

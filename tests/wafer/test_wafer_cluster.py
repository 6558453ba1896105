"""Wafer tunnels in cluster mode, side by side with native ones of the same app: requested
and pushed on one pod, held on another, and after kill -9 of the pod holding them, exactly
one legacy ``close`` event each, after everything they said, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from websockets.asyncio.client import connect

from tests.support.cluster import LEASE, cluster_of
from tests.support.redis_server import RedisServer
from tests.support.servers import run_uvicorn
from tests.support.waiting import check_for
from tests.wafer.legacy import HOST, KEY, LegacyServer, signed

TUNNELS, MESSAGES = 4, 3


@pytest.fixture
async def business() -> AsyncIterator[tuple[LegacyServer, int]]:
    server = LegacyServer()
    app = Starlette(routes=[Route("/weapp/tunnel", server.receive, methods=["POST"])])
    async with run_uvicorn(app) as port:
        yield server, port


async def test_a_killed_pod_gives_each_wafer_tunnel_exactly_one_close_after_its_messages(
    tmp_path: Path, redis_server: RedisServer, business: tuple[LegacyServer, int]
) -> None:
    server, port = business
    wafer = {
        "signing_keys": [KEY],
        "business_hosts": [HOST],
        "receive_url_origin": f"http://127.0.0.1:{port}",
    }
    async with cluster_of(tmp_path, redis_server, app={"wafer": wafer}) as cluster:
        pods = cluster.pods
        requested = {"receiveUrl": f"https://{HOST}/weapp/tunnel", "protocolType": "wss"}
        tunnels: list[tuple[str, str]] = []
        async with httpx.AsyncClient(base_url=pods[1].url) as http:
            for _ in range(TUNNELS):
                answer = (await http.post("/wafer/demo/get/wsurl", json=signed(requested))).json()
                assert answer["code"] == 0, answer
                data = json.loads(answer["data"])
                # The load balancer sends every socket to pod 0.
                path = data["connectUrl"].split("/wafer/v1/connect", 1)[1]
                tunnels.append(
                    (data["tunnelId"], f"ws://127.0.0.1:{pods[0].port}/wafer/v1/connect{path}")
                )
        native = await cluster.issue(2, "native-user")
        sockets = [await connect(url) for _, url in tunnels]
        native_socket = await connect(cluster.on_pod(0, native))
        try:
            for n in range(MESSAGES):
                for ws in sockets:
                    await ws.send(f'message:{{"type":"n","content":{n}}}')
            ids = [tunnel_id for tunnel_id, _ in tunnels]
            await check_for(
                10,
                lambda: all(len(server.of(t)) == 1 + MESSAGES for t in ids),
                what="connect and messages of every tunnel",
            )
            # A push through pod 2 reaches a socket on pod 0.
            content = json.dumps({"type": "hello", "content": {}})
            async with httpx.AsyncClient(base_url=pods[2].url) as http:
                pushed = await http.post(
                    "/wafer/demo/ws/push",
                    json=signed([{"tunnelIds": ids[:1], "type": "message", "content": content}]),
                )
            assert pushed.json()["data"] == {"invalidTunnelIds": []}
            assert await asyncio.wait_for(sockets[0].recv(), 5) in (
                "timeout:15",
                f"message:{content}",
            )

            # Killed right after its last delivery: legacy events carry no id to tell a
            # second delivery by the adopting pod from a new event, so the pod forgets
            # them at once (native ones may wait 100 ms for a write to go along with).
            await asyncio.sleep(0.02)
            assert pods[0].proc is not None
            os.kill(pods[0].proc.pid, signal.SIGKILL)
            await check_for(
                LEASE * 5,
                lambda: all(server.of(t)[-1][0] == "close" for t in ids),
                what="a close event for every Wafer tunnel",
            )
            await check_for(
                LEASE * 5,
                lambda: any(e["type"] == "tunnel.closed" for e in cluster.receiver.events),
                what="the native tunnel's tunnel.closed",
            )
            await asyncio.sleep(LEASE * 1.5)  # no pod reports them again
            for tunnel_id in ids:
                events = server.of(tunnel_id)
                assert [kind for kind, _ in events] == ["connect", *["message"] * MESSAGES, "close"]
                assert [json.loads(c)["content"] for _, c in events[1:-1]] == list(range(MESSAGES))
            assert server.bad_signatures == 0
            closed = [e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]
            assert [e["tunnel_id"] for e in closed] == [native["tunnel_id"]]
            # The app's native webhooks never carried a Wafer tunnel's event.
            assert {e["tunnel_id"] for e in cluster.receiver.events} == {native["tunnel_id"]}
        finally:
            for ws in [*sockets, native_socket]:
                ws.transport.abort()

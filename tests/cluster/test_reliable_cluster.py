"""The reliable protocol on pods sharing Redis: a tunnel whose socket dropped is shown
``resumable`` by every pod, pushes sent through any pod while it waits are kept for it,
and its client resuming on the pod that held it gets them, in order, with no events."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from tests.support.cluster import LEASE, cluster_of
from tests.support.redis_server import RedisServer
from tests.support.reliable_client import ReliableClient
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import check_for


async def test_a_dropped_tunnel_is_resumable_everywhere_and_resumes_on_its_pod(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2, on_events=None) as cluster:
        issued = await cluster.issue(1, "erin", groups=["g"])
        tunnel_id = issued["tunnel_id"]
        client = ReliableClient(cluster.on_pod(0, issued))
        await client.connect()
        await check_for(10, lambda: len(cluster.receiver.events) == 1)
        async with cluster.api(1) as http:

            async def state_is(expected: str) -> bool:
                found = (await http.get(f"/v1/tunnels/{tunnel_id}")).json()["state"]
                return bool(found == expected)

            assert await state_is("open")
            client.drop()
            await check_for(10, lambda: state_is("resumable"), what="resumable")
            for n, to in enumerate(
                ({"tunnels": [tunnel_id]}, {"users": ["erin"]}, {"groups": ["g"]})
            ):
                sent = await http.post(
                    "/v1/messages", json={"messages": [{"to": to, "data": str(n)}]}
                )
                assert sent.status_code == 200 and sent.json()["not_connected"] == [], sent.text
            welcome = await client.connect()
            assert welcome["resumed"] is True
            await client.wait_for(lambda: len(client.received) == 3)
            assert client.received == ["0", "1", "2"]
            await check_for(10, lambda: state_is("open"), what="open again")
        assert [e["type"] for e in cluster.receiver.events] == ["tunnel.connected"]
        await client.close()


async def push_stream(http: httpx.AsyncClient, tunnel_id: str, count: int, rate: float) -> None:
    """``count`` pushes at ``rate``/s, one API call each; every one is taken (a tunnel
    whose pod died keeps them for its resume)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(count):
        body = {"messages": [{"to": {"tunnels": [tunnel_id]}, "data": str(n)}]}
        response = await http.post("/v1/messages", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["not_connected"] == [], (n, response.json())
        await asyncio.sleep(max(0.0, started + (n + 1) / rate - loop.time()))


async def test_a_cut_connection_resumes_on_another_pod_with_nothing_lost(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """1,000 pushes at 200/s through pod 2; the socket on pod 0 is cut (pod 0 goes on
    writing into it); 2 s later the client resumes on pod 1."""
    async with cluster_of(tmp_path, redis_server, on_events=None) as cluster:
        issued = await cluster.issue(1, "fay")
        tunnel_id = issued["tunnel_id"]
        proxy = TcpProxy(cluster.pods[0].port)
        proxy.start()
        try:
            client = ReliableClient(
                cluster.on_pod(0, issued).replace(f":{cluster.pods[0].port}/", f":{proxy.port}/")
            )
            await client.connect()
            async with cluster.api(2) as http:
                stream = asyncio.create_task(push_stream(http, tunnel_id, 1000, 200))
                await client.wait_for(lambda: len(client.received) >= 200)
                for n in range(10):
                    await client.send(f"before {n}")
                await asyncio.sleep(0.2)
                proxy.cut()
                for n in range(10):
                    await client.send(f"lost {n}")
                client.abandon()
                await asyncio.sleep(2)
                welcome = await client.connect(cluster.on_pod(1, issued))
                assert welcome["resumed"] is True, welcome
                await client.send("after")
                await stream
                await client.wait_for(lambda: len(client.received) == 1000, seconds=15)
        finally:
            proxy.stop()
        assert client.received == [str(n) for n in range(1000)]
        assert client.duplicates == client.gaps == 0
        expected = [f"before {n}" for n in range(10)] + [f"lost {n}" for n in range(10)]
        messages = lambda: [  # noqa: E731
            e["data"] for e in cluster.receiver.events if e["type"] == "tunnel.message"
        ]
        await check_for(20, lambda: len(messages()) >= 21, what="every message")
        await asyncio.sleep(0.3)
        assert messages() == [*expected, "after"]
        assert [e["type"] for e in cluster.receiver.events if e["type"] != "tunnel.message"] == [
            "tunnel.connected"
        ]


async def test_a_client_resumes_on_another_pod_after_its_pod_is_killed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """kill -9 of the pod holding the socket during 1,000 pushes at 200/s and 200 client
    messages; the client resumes on another pod 2 s later: every push arrives once, in
    order; every message reaches the business server, in order, and one the dead pod
    relayed without Redis knowing comes again with the same event id."""
    limits = {"messages_per_second": 1000, "message_burst": 1000}
    async with cluster_of(tmp_path, redis_server, limits=limits, on_events=None) as cluster:
        issued = await cluster.issue(1, "gus")
        tunnel_id = issued["tunnel_id"]
        client = ReliableClient(cluster.on_pod(0, issued))
        await client.connect()
        async with cluster.api(2) as http:
            stream = asyncio.create_task(push_stream(http, tunnel_id, 1000, 200))
            await client.wait_for(lambda: len(client.received) >= 200)
            for n in range(100):
                await client.send(f"m{n}")
                await asyncio.sleep(0.002)
            assert cluster.pods[0].proc is not None
            os.kill(cluster.pods[0].proc.pid, signal.SIGKILL)
            await client.wait_for(lambda: client.closed is not None)
            client.abandon()
            for n in range(100, 150):
                await client.send(f"m{n}")  # offline
            await asyncio.sleep(2)
            welcome = await client.connect(cluster.on_pod(1, issued))
            assert welcome["resumed"] is True, welcome
            for n in range(150, 200):
                await client.send(f"m{n}")
            await stream
            await client.wait_for(lambda: len(client.received) == 1000, seconds=15)
        assert client.received == [str(n) for n in range(1000)]
        assert client.duplicates == client.gaps == 0
        sent = [f"m{n}" for n in range(200)]
        events = cluster.receiver.events
        await check_for(
            30, lambda: {e.get("data") for e in events} >= set(sent), what="every message"
        )
        await asyncio.sleep(LEASE * 2)  # pod 0 reaped meanwhile: the tunnel lives on
        messages = [e for e in events if e["type"] == "tunnel.message"]
        first: dict[str, str] = {}
        for event in messages:
            assert first.setdefault(event["data"], event["id"]) == event["id"], event
        assert list(first) == sent
        assert [e["type"] for e in events if e["type"] != "tunnel.message"] == ["tunnel.connected"]
        async with cluster.api(2) as http:
            presence = await http.get(f"/v1/tunnels/{tunnel_id}")
            assert presence.json()["node_id"] == "pod-1"


async def test_a_dead_pods_reliable_tunnel_not_resumed_ends_once_when_its_window_passes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    limits = {"resume_window_seconds": 3}
    async with cluster_of(tmp_path, redis_server, limits=limits, on_events=None) as cluster:
        issued = await cluster.issue(1, "ida")
        tunnel_id = issued["tunnel_id"]
        client = ReliableClient(cluster.on_pod(0, issued))
        await client.connect()
        await check_for(10, lambda: len(cluster.receiver.events) == 1)
        assert cluster.pods[0].proc is not None
        os.kill(cluster.pods[0].proc.pid, signal.SIGKILL)
        client.abandon()
        async with cluster.api(1) as http:

            async def resumable() -> bool:
                found = await http.get(f"/v1/tunnels/{tunnel_id}")
                return found.status_code == 200 and found.json()["state"] == "resumable"

            # Reaped after the lease (2 s), kept for its window: nobody reports it yet.
            await check_for(10, resumable, what="waiting for a resume after its pod died")
            assert [e["type"] for e in cluster.receiver.events] == ["tunnel.connected"]
            closed = lambda: [  # noqa: E731
                e for e in cluster.receiver.events if e["type"] == "tunnel.closed"
            ]
            await check_for(15, closed, what="tunnel.closed when the window passed")
            await asyncio.sleep(LEASE * 2)
            assert [(e["code"], e["reason"]) for e in closed()] == [(1006, "resume_expired")]
            assert (await http.get(f"/v1/tunnels/{tunnel_id}")).status_code == 404

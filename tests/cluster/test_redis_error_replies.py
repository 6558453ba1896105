"""Redis answering with errors (``maxmemory`` reached, ``READONLY`` in a failover) is
treated like an outage: connects are refused with a documented code and leave nothing
behind, the pod turns unready, and it recovers once Redis accepts writes again."""

from __future__ import annotations

import asyncio

import httpx
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import app_config, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for, scaled
from tunnel_broker.config import Secret


async def _close_of(url: str) -> tuple[int, str]:
    async with connect(url, open_timeout=10) as ws:
        try:
            await asyncio.wait_for(ws.recv(), scaled(10))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("the tunnel stayed open")


async def test_error_replies_refuse_connects_cleanly_and_turn_the_pod_unready(
    redis_server: RedisServer, receiver: WebhookReceiver
) -> None:
    config = app_config("demo", receiver.url, receiver.secret)
    settings = {"backend": "redis", "redis_url": Secret(redis_server.url), "lease_seconds": 2.0}
    admin = redis.Redis(port=redis_server.port)
    async with run_broker([config], node_id="full", **settings) as pod:
        demo = pod.client("demo")
        issued = [await demo.issue(f"user{n}") for n in range(5)]
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")  # every write now answers OOM
        try:
            closes = [await _close_of(i["connect_url"]) for i in issued]
            assert closes == [(1013, "backend_unavailable")] * 5
            assert len(pod.node.hub) == 0, "a refused tunnel stayed in the local index"
            async with httpx.AsyncClient(base_url=pod.url) as http:
                ready = await http.get("/readyz")
                assert ready.status_code == 503
                metrics = (await http.get("/metrics")).text
            assert 'tb_tunnels_open{app="demo"}' not in metrics
        finally:
            admin.config_set("maxmemory", "0")

        async def ready_again() -> bool:
            async with httpx.AsyncClient(base_url=pod.url) as http:
                return (await http.get("/readyz")).status_code == 200

        await check_for(10, ready_again, what="ready once redis accepts writes")
        fresh = await demo.issue("after")
        async with connect(fresh["connect_url"], open_timeout=10) as ws:
            await check_for(5, lambda: receiver.events_of(fresh["tunnel_id"], "tunnel.connected"))
            assert len(pod.node.hub) == 1
            await ws.close()
    admin.close()

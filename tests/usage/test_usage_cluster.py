"""Usage metering with three broker processes on one real redis-server: the same
scripted load as on one broker, spread over the pods, shows as exact sums whichever pod
is asked; every pod's webhook deliveries show on every pod; a pod stopping cleanly
writes its last counts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.cluster import Cluster, cluster_of
from tests.support.redis_server import RedisServer
from tests.support.servers import run_uvicorn
from tests.support.waiting import check_for
from tests.usage.load import (
    APPID,
    WECHAT_SECRET,
    Pod,
    assert_tunnel_minutes,
    matches,
    mismatches,
    run_load,
    wechat_app,
)
from tunnel_broker.usage.redis_store import RedisUsageStore
from tunnel_broker.usage.report import app_usage
from tunnel_broker.usage.window import usage_window
from tunnel_broker.wechat.simulator import create_simulator_app

FLUSH = "0.2"


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Any, int]]:
    sim_app = create_simulator_app({APPID: WECHAT_SECRET})
    async with run_uvicorn(sim_app) as port:
        yield sim_app.state.simulator, port


@pytest.fixture
async def stored(redis_server: RedisServer) -> AsyncIterator[Any]:
    """Usage as Redis keeps it, read by the test itself (an API call would count)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisUsageStore(client, None, "test", 35)

    async def read() -> dict[str, Any]:
        return await app_usage(store, "demo", usage_window(None, None, time.time(), 35))

    try:
        yield read
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def three_pods(
    tmp_path: Path, redis_server: RedisServer, sim_port: int, flush: str = FLUSH
) -> AsyncIterator[Cluster]:
    async with cluster_of(
        tmp_path,
        redis_server,
        pods=3,
        on_events=None,
        args=("--usage-flush-seconds", flush, "--webhook-retry-max-delay", "0.3"),
        app=wechat_app(f"http://127.0.0.1:{sim_port}"),
    ) as cluster:
        yield cluster


async def test_usage_sums_every_pod_exactly(
    tmp_path: Path, redis_server: RedisServer, simulator: tuple[Any, int], stored: Any
) -> None:
    sim, sim_port = simulator
    async with three_pods(tmp_path, redis_server, sim_port) as cluster:
        apis = [cluster.api(i) for i in range(3)]
        try:
            pods = [Pod(p.url, api) for p, api in zip(cluster.pods, apis, strict=True)]
            done = await run_load(
                pods,
                cluster.receiver,
                sim,
                lambda i: httpx.AsyncClient(base_url=cluster.pods[i].url),
            )

            async def exact() -> bool:
                return matches((await stored())["totals"], done)

            with contextlib.suppress(AssertionError):
                await check_for(10, exact, what="usage to show the load")
            totals = (await stored())["totals"]
            assert not mismatches(totals, done)
            assert_tunnel_minutes(totals, done)
            # the attach script's peak of the app's tunnels on all pods together
            assert totals["peak_tunnels"] == done.peak_tunnels == 3

            # Every pod answers the same sums, and every pod's deliveries.
            for pod, api in enumerate(apis):
                answer = await api.get("/v1/usage")
                assert answer.status_code == 200, answer.text
                shown = answer.json()["totals"]
                assert not mismatches(shown, done, api_call_slack=3), pod
                assert shown["tunnel_minutes"] == totals["tunnel_minutes"]

                async def all_deliveries(api: httpx.AsyncClient = api) -> bool:
                    answer = await api.get("/v1/webhooks/deliveries", params={"limit": 200})
                    return len(answer.json()["deliveries"]) == cluster.receiver.attempts

                await check_for(5, all_deliveries, what=f"every delivery on pod {pod}")
        finally:
            for api in apis:
                await api.aclose()


async def test_a_pod_stopping_cleanly_writes_its_last_counts(
    tmp_path: Path, redis_server: RedisServer, simulator: tuple[Any, int], stored: Any
) -> None:
    _, sim_port = simulator
    # A flush interval no test waits for: only the stop writes.
    async with three_pods(tmp_path, redis_server, sim_port, flush="3600") as cluster:
        for pod in range(3):
            async with cluster.api(pod) as api:
                for _ in range(pod + 1):
                    issued = await api.post("/v1/tunnels", json={"user_id": "u"})
                    assert issued.status_code == 201
        assert (await stored())["totals"]["api_calls"] == 0
        for process in cluster.pods:
            process.terminate()
        for process in cluster.pods:
            assert await process.wait() == 0
        assert (await stored())["totals"]["api_calls"] == 1 + 2 + 3

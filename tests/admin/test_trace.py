"""The live trace: an app's events, pushes and webhook deliveries streamed as they
happen, to its own key only, filtered by tunnel or user, payloads only when the app
allows them (redacted and cut); on one broker and across three pods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.admin.trace_reader import reading_trace
from tests.support.broker import BrokerHandle, app_config, open_tunnel, run_broker
from tests.support.cluster import cluster_of
from tests.support.receiver import WebhookReceiver
from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for

pytestmark = pytest.mark.timeout(60)

SECRET_MESSAGE = '{"text": "hi", "password": "hunter2"}'


@pytest.fixture
async def broker(receiver: WebhookReceiver) -> AsyncIterator[BrokerHandle]:
    quiet = app_config("quiet", receiver.url, receiver.secret)
    shown = {**app_config("shown", receiver.url, receiver.secret), "trace_payloads": True}
    async with run_broker([quiet, shown]) as handle:
        yield handle


async def test_the_trace_shows_events_pushes_and_deliveries_as_they_happen(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    quiet = broker.client("quiet")
    async with reading_trace(broker.url, quiet.app.api_keys[0]) as trace:
        assert trace.status == 200
        issued = await quiet.issue("ann")
        async with open_tunnel(issued["connect_url"]) as ws:
            await ws.send(SECRET_MESSAGE)
            pushed = await quiet.send({"users": ["ann"]}, "hello ann")
            assert pushed.status_code == 200
            assert await ws.recv() == "hello ann"
            tunnel_id = issued["tunnel_id"]
            await check_for(5, lambda: trace.of("event", type="tunnel.message"))
            await check_for(5, lambda: trace.of("push", via="api"))
            await check_for(5, lambda: trace.of("delivery", outcome="ok"))
        await check_for(5, lambda: trace.of("event", type="tunnel.closed"))
    (connected,) = trace.of("event", type="tunnel.connected")
    assert (connected["tunnel_id"], connected["user_id"]) == (tunnel_id, "ann")
    (message,) = trace.of("event", type="tunnel.message")
    assert (
        message["size"] == len(SECRET_MESSAGE) and "data" not in message
    )  # the app shows no payloads
    (push,) = trace.of("push")
    assert push["target"] == {"users": ["ann"]} and "data" not in push
    assert "hunter2" not in str(trace.records)


async def test_payloads_when_the_app_allows_them_redacted_and_cut(broker: BrokerHandle) -> None:
    shown = broker.client("shown")
    async with reading_trace(broker.url, shown.app.api_keys[0]) as trace:
        issued = await shown.issue("ann")
        async with open_tunnel(issued["connect_url"]) as ws:
            await ws.send('{"text": "hi", "session": {"skey": "s3cr3t"}, "token": "t0k"}')
            await ws.send("z" * 1000)
            await check_for(5, lambda: len(trace.of("event", type="tunnel.message")) == 2)
    first, second = trace.of("event", type="tunnel.message")
    assert first["data"] == '{"text":"hi","session":"[redacted]","token":"[redacted]"}'
    assert (len(second["data"]), second["truncated"]) == (256, True)
    assert "s3cr3t" not in str(trace.records) and "t0k" not in str(trace.records)


async def test_a_filtered_trace_shows_one_user(broker: BrokerHandle) -> None:
    quiet = broker.client("quiet")
    async with reading_trace(broker.url, quiet.app.api_keys[0], user_id="bob") as trace:
        ann, bob = await quiet.issue("ann"), await quiet.issue("bob")
        async with (
            open_tunnel(ann["connect_url"]) as ann_ws,
            open_tunnel(bob["connect_url"]) as bob_ws,
        ):
            await ann_ws.send("from ann")
            await bob_ws.send("from bob")
            await quiet.send({"users": ["ann"]}, "to ann")
            await quiet.send({"users": ["bob"]}, "to bob")
            await check_for(5, lambda: trace.of("event", type="tunnel.message"))
            await check_for(5, lambda: trace.of("push"))
            await asyncio.sleep(0.3)
    assert {r["user_id"] for r in trace.records if r["kind"] == "event"} == {"bob"}
    assert [r["target"] for r in trace.of("push")] == [{"users": ["bob"]}]
    assert not trace.of("delivery")


async def test_a_trace_is_the_apps_own(broker: BrokerHandle) -> None:
    quiet, shown = broker.client("quiet"), broker.client("shown")
    async with reading_trace(broker.url, shown.app.api_keys[0]) as other:
        issued = await quiet.issue("ann")
        async with open_tunnel(issued["connect_url"]) as ws:
            await ws.send("private")
            await asyncio.sleep(0.5)
    assert other.records == []
    async with httpx.AsyncClient(base_url=broker.url) as http:
        refused = await http.get(
            "/v1/trace", headers={"authorization": "Bearer nope-nope-nope-nope"}
        )
        assert refused.status_code == 401
        bad = await http.get(
            "/v1/trace",
            params={"tunnel_id": "a b"},
            headers={"authorization": f"Bearer {quiet.app.api_keys[0]}"},
        )
        assert bad.status_code == 422
    # Nobody watches any more: no tap is left on the app.
    await check_for(5, lambda: broker.node.usage.of("shown").tap is None)


@pytest.mark.slow
async def test_the_trace_of_three_pods_on_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    async with cluster_of(tmp_path, redis_server) as cluster:
        key = cluster.config["api_keys"][0]
        async with reading_trace(cluster.pods[0].url, key) as trace:
            issued = await cluster.issue(1, "ann")
            async with open_tunnel(cluster.on_pod(2, issued)) as ws:
                # The other pods tap the app within a second of the trace opening.
                async def seen() -> bool:
                    await ws.send("ping")
                    async with cluster.api(1) as http:
                        await http.post(
                            "/v1/messages",
                            json={"messages": [{"to": {"users": ["ann"]}, "data": "x"}]},
                        )
                    return bool(trace.of("event", type="tunnel.message")) and bool(trace.of("push"))

                await check_for(10, seen, interval=0.3)
                await check_for(5, lambda: trace.of("delivery"))
        assert trace.of("event", tunnel_id=issued["tunnel_id"])

"""An app's quotas on one broker (memory backend): real sockets, API calls and webhook
replies, refused at the limit and not before; the warning header; a new period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.broker import BrokerHandle, app_config, closed_with, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for, scaled


def reply_to_please(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The business server answers a client's ``please`` with a message of its own."""
    return [
        {"type": "send", "event_id": e["id"], "data": "reply"}
        for e in events
        if e["type"] == "tunnel.message" and e.get("data") == "please"
    ]


@pytest.fixture
async def quota_broker(receiver: WebhookReceiver) -> AsyncIterator[BrokerHandle]:
    receiver.on_events = reply_to_please
    configs = [
        app_config(
            "capped",
            receiver.url,
            receiver.secret,
            max_tunnels=2,
            message_quota=6,
            message_quota_period="hour",
            quota_warning_ratio=0.5,
        ),
        app_config("free", receiver.url, receiver.secret),
    ]
    async with run_broker(configs) as handle:
        yield handle


async def test_max_tunnels_refuses_the_tunnel_beyond_it_and_not_before(
    quota_broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    capped = quota_broker.client("capped")
    issued = [await capped.issue(f"user{i}") for i in range(3)]
    first = await connect(issued[0]["connect_url"])
    second = await connect(issued[1]["connect_url"])
    try:
        await check_for(5, lambda: len(receiver.events) == 2, what="both connected")
        refused = await capped.http.post("/v1/tunnels", json={"user_id": "more"})
        assert refused.status_code == 429
        assert refused.json()["code"] == "tunnel_quota_exceeded"
        # A URL issued before the quota filled is refused at its connect.
        async with connect(issued[2]["connect_url"]) as third:
            assert await closed_with(third) == (4429, "tunnel_quota")
        # Another app is not affected.
        await quota_broker.client("free").issue("someone")
        # A takeover is no new tunnel.
        again = await connect(issued[1]["connect_url"])
        assert await closed_with(second) == (4409, "replaced")
        second = again
        listed = (await capped.http.get("/v1/tunnels")).json()
        ids = sorted(t["tunnel_id"] for t in listed["tunnels"])
        assert ids == sorted([issued[0]["tunnel_id"], issued[1]["tunnel_id"]])
        await first.close()
        await check_for(5, lambda: len(quota_broker.node.hub) == 1)
        async with connect(issued[2]["connect_url"]) as third:
            await check_for(
                5, lambda: receiver.events_of(issued[2]["tunnel_id"], "tunnel.connected")
            )
            assert third.close_code is None
    finally:
        await first.close()
        await second.close()
    metrics = (await capped.http.get("/metrics")).text
    assert 'tb_quota_refusals_total{app="capped",quota="tunnels"} 2.0' in metrics
    assert 'tb_connects_total{app="capped",result="tunnel_quota"} 1.0' in metrics
    assert all(e["tunnel_id"] != issued[2]["tunnel_id"] for e in receiver.events[:3])


async def test_the_message_quota_counts_client_messages_pushes_and_replies(
    quota_broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    capped = quota_broker.client("capped")
    issued = await capped.issue("alice")
    tunnel_id = issued["tunnel_id"]
    async with connect(issued["connect_url"]) as ws:
        await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.connected"))
        await ws.send("one")
        await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.message"))
        # 2 used: no warning of messages yet (from 3 of 6); one tunnel of 2 is half.
        unwarned = await capped.send({"tunnels": [tunnel_id]}, "push")
        assert unwarned.status_code == 200
        assert unwarned.headers["tb-quota-warning"] == "tunnels; used=1; limit=2"
        assert await asyncio.wait_for(ws.recv(), scaled(5)) == "push"
        await ws.send("please")  # relayed, and answered with a reply: 4 used
        assert await asyncio.wait_for(ws.recv(), scaled(5)) == "reply"
        listed = await capped.http.get("/v1/tunnels")
        end = int(time.time()) // 3600 * 3600 + 3600
        assert listed.headers["tb-quota-warning"] == (
            f"messages; used=4; limit=6; period=hour; reset={end}, tunnels; used=1; limit=2"
        )
        # Three in one request would be one beyond: none of them is sent.
        body = {"messages": [{"to": {"tunnels": [tunnel_id]}, "data": f"m{i}"} for i in range(3)]}
        refused = await capped.http.post("/v1/messages", json=body)
        assert refused.status_code == 429
        assert refused.json()["code"] == "message_quota_exceeded"
        assert 0 < int(refused.headers["retry-after"]) <= 3601
        assert refused.headers["tb-quota-warning"].startswith("messages; used=4;")
        body["messages"] = body["messages"][:2]
        assert (await capped.http.post("/v1/messages", json=body)).status_code == 200
        assert [await asyncio.wait_for(ws.recv(), scaled(5)) for _ in range(2)] == ["m0", "m1"]
        # All six used: the next client message closes the tunnel, unrelayed.
        await ws.send("seven")
        assert await closed_with(ws) == (4429, "message_quota")
    await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.closed"))
    relayed = [e["data"] for e in receiver.events_of(tunnel_id, "tunnel.message")]
    assert relayed == ["one", "please"]
    closed = receiver.events_of(tunnel_id, "tunnel.closed")[0]
    assert (closed["code"], closed["reason"]) == (4429, "message_quota")
    assert (await capped.send({"all": True}, "more")).status_code == 429
    metrics = (await capped.http.get("/metrics")).text
    assert 'tb_quota_refusals_total{app="capped",quota="messages"} 3.0' in metrics
    usage = quota_broker.node.usage.of("capped")
    assert (usage.pushes, usage.push_bytes) == (4, len("push") + len("reply") + 4)


async def test_a_reply_beyond_the_quota_is_skipped_and_counted(
    receiver: WebhookReceiver,
) -> None:
    receiver.on_events = reply_to_please
    configs = [app_config("tiny", receiver.url, receiver.secret, message_quota=1)]
    async with run_broker(configs) as handle:
        tiny = handle.client("tiny")
        issued = await tiny.issue("bob")
        async with connect(issued["connect_url"]) as ws:
            await ws.send("please")  # the one message of the quota: its reply is beyond
            bad = 'tb_webhook_bad_actions_total{app="tiny"} 1.0'

            async def counted() -> bool:
                return bad in (await tiny.http.get("/metrics")).text

            await check_for(5, counted, what="the refused reply counted")
            assert ws.close_code is None


async def test_the_quota_starts_again_with_the_next_period(
    quota_broker: BrokerHandle,
) -> None:
    now = [time.time() // 3600 * 3600 + 5]
    quotas = quota_broker.node.backend.quotas
    quotas.clock = lambda: now[0]
    capped = quota_broker.client("capped")
    body = {"messages": [{"to": {"all": True}, "data": "x"}] * 6}
    assert (await capped.http.post("/v1/messages", json=body)).status_code == 200
    assert (await capped.send({"all": True}, "x")).status_code == 429
    now[0] += 3600
    answer = await capped.send({"all": True}, "x")
    assert answer.status_code == 200
    assert "tb-quota-warning" not in answer.headers


async def test_an_app_without_quotas_gets_no_warning(
    quota_broker: BrokerHandle,
) -> None:
    free = quota_broker.client("free")
    for _ in range(3):
        answer = await free.send({"all": True}, "x")
        assert answer.status_code == 200 and "tb-quota-warning" not in answer.headers


async def test_limits_changed_at_run_time_apply_to_the_next_message(
    quota_broker: BrokerHandle,
) -> None:
    node = quota_broker.node
    capped = quota_broker.client("capped")
    body = {"messages": [{"to": {"all": True}, "data": "x"}] * 6}
    assert (await capped.http.post("/v1/messages", json=body)).status_code == 200
    assert (await capped.send({"all": True}, "x")).status_code == 429
    app = node.apps.get("capped")
    assert app is not None
    raised = app.model_copy(update={"limits": app.limits.model_copy(update={"message_quota": 8})})
    node.apps.put(raised)
    assert (await capped.send({"all": True}, "x")).status_code == 200
    assert (await capped.send({"all": True}, "x")).status_code == 200
    assert (await capped.send({"all": True}, "x")).status_code == 429

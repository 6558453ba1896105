"""Webhook delivery under failure: nothing lost, nothing reordered, nothing duplicated."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from websockets.asyncio.client import connect

from tests.support.broker import app_config, new_secret, open_tunnel, run_broker
from tests.support.receiver import WebhookReceiver, echo_messages
from tests.support.waiting import check_for


def messages_in_order(receiver: WebhookReceiver, tunnel_id: str) -> list[str]:
    return [e["data"] for e in receiver.events_of(tunnel_id, "tunnel.message")]


async def test_receiver_down_for_10s_then_back_gets_everything_once_in_order() -> None:
    receiver = WebhookReceiver(secret=new_secret())
    configs = [
        app_config(
            "demo", receiver.url, receiver.secret, messages_per_second=1000, message_burst=1000
        )
    ]
    async with run_broker(configs, webhook_retry_max_delay=1.0) as broker:
        demo = broker.client("demo")
        issued = [await demo.issue(f"user{i}") for i in range(3)]
        sockets = []
        for item in issued:
            sockets.append(await connect(item["connect_url"]))
        # The receiver is not listening at all: connection refused.
        started = time.monotonic()
        sent: dict[str, list[str]] = {i["tunnel_id"]: [] for i in issued}

        async def chatter() -> None:
            n = 0
            while time.monotonic() - started < 10:
                for item, ws in zip(issued, sockets, strict=True):
                    text = f"m{n}"
                    await ws.send(text)
                    sent[item["tunnel_id"]].append(text)
                n += 1
                await asyncio.sleep(0.05)

        # Sockets wait for their tunnel.connected to be acknowledged before they are
        # read, so the messages pile up in the socket buffers while the receiver is down.
        await chatter()
        assert receiver.attempts == 0
        async with receiver.serving():
            for item in issued:
                await check_for(
                    30,
                    lambda item=item: (
                        len(messages_in_order(receiver, item["tunnel_id"]))
                        == len(sent[item["tunnel_id"]])
                    ),
                    what="all messages delivered",
                )
            for item in issued:
                assert messages_in_order(receiver, item["tunnel_id"]) == sent[item["tunnel_id"]]
            ids = Counter(e["id"] for e in receiver.events)
            assert max(ids.values()) == 1, "an event was delivered twice"
            for ws in sockets:
                await ws.close()
            for item in issued:
                await check_for(
                    10, lambda item=item: receiver.events_of(item["tunnel_id"], "tunnel.closed")
                )
        assert broker.node.metrics.webhook_retries.labels("demo")._value.get() > 0


async def test_receiver_errors_garbage_and_slowness_are_retried_or_survived() -> None:
    receiver = WebhookReceiver(secret=new_secret(), on_events=echo_messages)
    configs = [app_config("demo", receiver.url, receiver.secret, webhook_timeout_seconds=0.5)]
    async with receiver.serving(), run_broker(configs, webhook_retry_max_delay=0.2) as broker:
        issued = await broker.client("demo").issue("zed")
        tunnel_id = issued["tunnel_id"]
        async with open_tunnel(issued["connect_url"]) as ws:
            await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.connected"))

            receiver.behaviour = "status:500"
            await ws.send("during-500")
            await check_for(5, lambda: receiver.attempts >= 3, what="retries")
            receiver.behaviour = "ok"
            assert await asyncio.wait_for(ws.recv(), 5) == "echo:during-500"

            receiver.behaviour = "slow:1.0"  # slower than the 0.5 s timeout
            await ws.send("during-slow")
            attempts = receiver.attempts
            await check_for(5, lambda: receiver.attempts >= attempts + 2, what="timeouts")
            receiver.behaviour = "ok"
            assert await asyncio.wait_for(ws.recv(), 5) == "echo:during-slow"

            receiver.behaviour = "garbage"
            await ws.send("during-garbage")
            await check_for(5, lambda: "during-garbage" in messages_in_order(receiver, tunnel_id))
            receiver.behaviour = "ok"
            await ws.send("after-garbage")
            assert await asyncio.wait_for(ws.recv(), 5) == "echo:after-garbage"
        assert broker.node.metrics.webhook_bad_replies.labels("demo")._value.get() == 1
        # Slow attempts that timed out may have reached the receiver too (at-least-once),
        # but the order as first seen is the order sent.
        firsts = list(dict.fromkeys(messages_in_order(receiver, tunnel_id)))
        assert firsts == ["during-500", "during-slow", "during-garbage", "after-garbage"]


async def test_retry_after_is_honoured() -> None:
    receiver = WebhookReceiver(secret=new_secret(), behaviour="status:503", retry_after="2")
    configs = [app_config("demo", receiver.url, receiver.secret)]
    async with receiver.serving(), run_broker(configs, webhook_retry_max_delay=0.1) as broker:
        issued = await broker.client("demo").issue("yan")
        async with open_tunnel(issued["connect_url"]):
            await check_for(5, lambda: receiver.attempts == 1)
            first = time.monotonic()
            receiver.behaviour = "ok"
            await check_for(5, lambda: receiver.events_of(issued["tunnel_id"]))
            # Without Retry-After the 0.1 s backoff cap would have retried at once.
            assert time.monotonic() - first >= 1.5


async def test_batches_coalesce_many_tunnels_while_a_request_is_in_flight() -> None:
    receiver = WebhookReceiver(secret=new_secret(), behaviour="slow:0.3")
    configs = [app_config("demo", receiver.url, receiver.secret, webhook_concurrency=1)]
    async with receiver.serving(), run_broker(configs) as broker:
        demo = broker.client("demo")
        issued = [await demo.issue(f"u{i}") for i in range(20)]
        sockets = [await connect(i["connect_url"]) for i in issued]
        await check_for(10, lambda: len(receiver.events) >= 20)
        # 20 connects with one request in flight at a time arrive in few batches.
        assert len(receiver.deliveries) < 10
        for ws in sockets:
            await ws.close()
        await check_for(10, lambda: len(receiver.events) >= 40)


async def test_full_buffer_applies_back_pressure_instead_of_dropping() -> None:
    receiver = WebhookReceiver(secret=new_secret(), behaviour="status:503")
    configs = [
        app_config(
            "demo",
            receiver.url,
            receiver.secret,
            webhook_buffer_events=10,
            messages_per_second=1000,
            message_burst=1000,
        )
    ]
    async with receiver.serving(), run_broker(configs, webhook_retry_max_delay=0.2) as broker:
        demo = broker.client("demo")
        issued = await demo.issue("pressure")
        tunnel_id = issued["tunnel_id"]
        async with open_tunnel(issued["connect_url"]) as ws:
            await check_for(5, lambda: receiver.attempts >= 1)
            receiver.behaviour = "ok"
            await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.connected"))
            receiver.behaviour = "status:503"
            for i in range(200):
                await ws.send(f"p{i}")
            await asyncio.sleep(0.5)
            queue = broker.node.events.queue(broker.node.apps.get("demo"))  # type: ignore[arg-type]
            assert queue.depth <= 10, "the buffer grew past its bound"
            receiver.behaviour = "ok"
            await check_for(
                20, lambda: len(messages_in_order(receiver, tunnel_id)) == 200, what="all 200"
            )
            assert messages_in_order(receiver, tunnel_id) == [f"p{i}" for i in range(200)]


async def test_actions_run_in_order_and_an_invalid_one_is_skipped() -> None:
    def reply(events):  # type: ignore[no-untyped-def]
        out = []
        for e in events:
            if e["type"] == "tunnel.message":
                out += [
                    {"type": "join", "event_id": e["id"], "group": "g"},
                    {"type": "send", "to": {"groups": ["g"]}, "data": "one"},
                    {"type": "send", "data": 42},  # invalid: skipped, logged
                    {"type": "teleport"},  # unknown: skipped, logged
                    {"type": "send", "event_id": e["id"], "data": "two"},
                    {"type": "leave", "event_id": e["id"], "group": "g"},
                    {"type": "send", "to": {"groups": ["g"]}, "data": "never"},
                    {"type": "send", "event_id": e["id"], "data": "three"},
                ]
        return out

    receiver = WebhookReceiver(secret=new_secret(), on_events=reply)
    configs = [app_config("demo", receiver.url, receiver.secret)]
    async with receiver.serving(), run_broker(configs) as broker:
        issued = await broker.client("demo").issue("olga")
        async with open_tunnel(issued["connect_url"]) as ws:
            await ws.send("go")
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        assert got == ["one", "two", "three"]


async def test_webhook_signatures_list_every_secret_during_rotation() -> None:
    old, new = new_secret(), new_secret()
    receiver_old = WebhookReceiver(secret=old)
    config = app_config("demo", receiver_old.url, old)
    config["webhook_secrets"] = [new, old]
    async with receiver_old.serving(), run_broker([config]) as broker:
        issued = await broker.client("demo").issue("rot")
        async with open_tunnel(issued["connect_url"]):
            await check_for(5, lambda: receiver_old.events)
        assert receiver_old.rejected_signatures == 0
        signature = receiver_old.deliveries[0].headers["webhook-signature"]
        assert len(signature.split(" ")) == 2

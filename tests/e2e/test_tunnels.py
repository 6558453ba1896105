"""Tunnels end to end: real broker, real WebSocket clients, real webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.support.broker import BrokerHandle, closed_with, open_tunnel
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for, scaled


async def recv(ws, seconds: float = 5.0):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(ws.recv(), scaled(seconds))


async def test_message_reaches_webhook_and_reply_reaches_client(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("alice", identity={"nick": "Alice"}, meta={"room": "lobby"})
    assert issued["connect_url"].startswith(broker.ws_url + "/v1/connect?token=")
    async with open_tunnel(issued["connect_url"]) as ws:
        await ws.send("hello")
        assert await recv(ws) == "echo:hello"
    tunnel_id = issued["tunnel_id"]
    await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.closed"))
    kinds = [e["type"] for e in receiver.events_of(tunnel_id)]
    assert kinds == ["tunnel.connected", "tunnel.message", "tunnel.closed"]
    message = receiver.events_of(tunnel_id, "tunnel.message")[0]
    assert message["user_id"] == "alice"
    assert message["identity"] == {"nick": "Alice"}
    assert message["meta"] == {"room": "lobby"}
    assert message["app_id"] == "demo"
    assert message["data"] == "hello"
    closed = receiver.events_of(tunnel_id, "tunnel.closed")[0]
    assert closed["code"] == 1000
    assert receiver.rejected_signatures == 0


async def test_binary_frames_travel_base64_both_ways(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    receiver.on_events = lambda events: [
        {"type": "send", "event_id": e["id"], "data_base64": e["data_base64"]}
        for e in events
        if e["type"] == "tunnel.message"
    ]
    issued = await broker.client("demo").issue("bob")
    async with open_tunnel(issued["connect_url"]) as ws:
        await ws.send(b"\x00\xffbinary")
        assert await recv(ws) == b"\x00\xffbinary"


async def test_push_to_tunnel_user_group_and_all(broker: BrokerHandle) -> None:
    demo = broker.client("demo")
    a1 = await demo.issue("alice", groups=["room1"])
    a2 = await demo.issue("alice")
    b1 = await demo.issue("bob", groups=["room1", "room2"])
    other = await broker.client("other").issue("alice", groups=["room1"])
    async with (
        open_tunnel(a1["connect_url"]) as ws_a1,
        open_tunnel(a2["connect_url"]) as ws_a2,
        open_tunnel(b1["connect_url"]) as ws_b1,
        open_tunnel(other["connect_url"]) as ws_other,
    ):
        await check_for(5, lambda: len(broker.node.hub) == 4)

        response = await demo.send({"tunnels": [a1["tunnel_id"], "tun_missing"]}, "to-tunnel")
        assert response.status_code == 200
        assert response.json() == {"accepted": 1, "not_connected": ["tun_missing"]}
        assert await recv(ws_a1) == "to-tunnel"

        await demo.send({"users": ["alice"]}, "to-alice")
        assert await recv(ws_a1) == "to-alice"
        assert await recv(ws_a2) == "to-alice"

        await demo.send({"groups": ["room1"]}, "to-room1")
        assert await recv(ws_a1) == "to-room1"
        assert await recv(ws_b1) == "to-room1"

        await demo.send({"all": True}, "to-all")
        for ws in (ws_a1, ws_a2, ws_b1):
            assert await recv(ws) == "to-all"

        # Nothing of app "demo" leaked to app "other"; its own push arrives first.
        await broker.client("other").send({"all": True}, "other-only")
        assert await recv(ws_other) == "other-only"


async def test_group_join_leave_and_presence(broker: BrokerHandle) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("carol", identity={"openid": "o1"})
    tunnel_id = issued["tunnel_id"]
    async with open_tunnel(issued["connect_url"]) as ws:
        await check_for(5, lambda: len(broker.node.hub) == 1)
        joined = await demo.http.put(f"/v1/groups/g1/tunnels/{tunnel_id}")
        assert joined.json() == {"group": "g1", "tunnel_id": tunnel_id, "joined": True}
        info = (await demo.http.get(f"/v1/tunnels/{tunnel_id}")).json()
        assert info["groups"] == ["g1"]
        assert info["identity"] == {"openid": "o1"}
        assert info["node_id"] == broker.node.settings.node_id
        page = (await demo.http.get("/v1/groups/g1/tunnels")).json()
        assert [t["tunnel_id"] for t in page["tunnels"]] == [tunnel_id]
        await demo.send({"groups": ["g1"]}, "in-g1")
        assert await recv(ws) == "in-g1"
        left = await demo.http.delete(f"/v1/groups/g1/tunnels/{tunnel_id}")
        assert left.json()["left"] is True
        assert (await demo.http.get("/v1/groups/g1/tunnels")).json()["tunnels"] == []
        # Another app cannot see or touch this tunnel.
        other = broker.client("other")
        assert (await other.http.get(f"/v1/tunnels/{tunnel_id}")).status_code == 404
        assert (await other.http.delete(f"/v1/tunnels/{tunnel_id}")).status_code == 404
        assert (await other.http.put(f"/v1/groups/g1/tunnels/{tunnel_id}")).status_code == 404
    await check_for(5, lambda: len(broker.node.hub) == 0)
    gone = await demo.http.get(f"/v1/tunnels/{tunnel_id}")
    assert gone.status_code == 404
    assert gone.json()["code"] == "tunnel_not_connected"


async def test_presence_pages_through_a_users_tunnels(broker: BrokerHandle) -> None:
    demo = broker.client("demo")
    issued = [await demo.issue("dave") for _ in range(5)]
    async with contextlib.AsyncExitStack() as stack:
        for item in issued:
            await stack.enter_async_context(open_tunnel(item["connect_url"]))
        await check_for(5, lambda: len(broker.node.hub) == 5)
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = (await demo.http.get("/v1/users/dave/tunnels", params=params)).json()
            seen += [t["tunnel_id"] for t in page["tunnels"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(i["tunnel_id"] for i in issued)
        assert len(seen) == 5
        bad = await demo.http.get("/v1/users/dave/tunnels", params={"limit": "0"})
        assert bad.status_code == 422


async def test_close_by_tunnel_and_by_user(broker: BrokerHandle, receiver: WebhookReceiver) -> None:
    demo = broker.client("demo")
    one = await demo.issue("erin")
    two = await demo.issue("erin")
    async with open_tunnel(one["connect_url"]) as ws1, open_tunnel(two["connect_url"]) as ws2:
        await check_for(5, lambda: len(broker.node.hub) == 2)
        response = await demo.http.request(
            "DELETE", f"/v1/tunnels/{one['tunnel_id']}", json={"code": 4001, "reason": "kicked"}
        )
        assert response.json() == {"closed": True}
        assert await closed_with(ws1) == (4001, "kicked")
        closed = await demo.http.post("/v1/users/erin/close")
        assert closed.json() == {"closed": 1}
        code, _ = await closed_with(ws2)
        assert code == 1000
    await check_for(5, lambda: receiver.events_of(two["tunnel_id"], "tunnel.closed"))
    event = receiver.events_of(one["tunnel_id"], "tunnel.closed")
    assert [(e["code"], e["reason"]) for e in event] == [(4001, "kicked")]
    bad = await demo.http.request("DELETE", f"/v1/tunnels/{one['tunnel_id']}", json={"code": 1006})
    assert bad.status_code == 422


async def test_business_server_rejects_in_reply_to_connected(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    receiver.on_events = lambda events: [
        {"type": "close", "event_id": e["id"]} for e in events if e["type"] == "tunnel.connected"
    ]
    issued = await broker.client("demo").issue("mallory")
    async with open_tunnel(issued["connect_url"]) as ws:
        await ws.send("should never be relayed")
        assert await closed_with(ws) == (4403, "rejected")
    tunnel_id = issued["tunnel_id"]
    await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.closed"))
    kinds = [e["type"] for e in receiver.events_of(tunnel_id)]
    assert kinds == ["tunnel.connected", "tunnel.closed"]


async def test_reconnect_with_same_token_takes_tunnel_over(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("frank")
    tunnel_id = issued["tunnel_id"]
    async with open_tunnel(issued["connect_url"]) as old:
        await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.connected"))
        await demo.http.put(f"/v1/groups/kept/tunnels/{tunnel_id}")
        async with open_tunnel(issued["connect_url"]) as new:
            assert await closed_with(old) == (4409, "replaced")
            await new.send("after takeover")
            assert await recv(new) == "echo:after takeover"
            info = (await demo.http.get(f"/v1/tunnels/{tunnel_id}")).json()
            assert info["groups"] == ["kept"]
            await demo.send({"groups": ["kept"]}, "group still works")
            assert await recv(new) == "group still works"
    await check_for(5, lambda: receiver.events_of(tunnel_id, "tunnel.closed"))
    kinds = [e["type"] for e in receiver.events_of(tunnel_id)]
    # Same tunnel id throughout, one connected and exactly one closed.
    assert kinds == ["tunnel.connected", "tunnel.message", "tunnel.closed"]


async def test_oversized_frame_closes_with_1009(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    limit = broker.client("demo").app.limits.max_message_bytes
    issued = await broker.client("demo").issue("gina")
    async with open_tunnel(issued["connect_url"]) as ws:
        await ws.send("x" * (limit + 1))
        assert await closed_with(ws) == (1009, "message_too_big")
    # Far past every app's limit, the protocol layer refuses the frame before buffering it.
    huge = await broker.client("demo").issue("gina")
    async with open_tunnel(huge["connect_url"]) as ws:
        await ws.send(b"x" * (limit * 4))
        code, _ = await closed_with(ws)
    assert code == 1009
    await check_for(5, lambda: receiver.events_of(issued["tunnel_id"], "tunnel.closed"))
    assert receiver.events_of(issued["tunnel_id"], "tunnel.message") == []


async def test_message_rate_limit_closes_with_1008(receiver: WebhookReceiver) -> None:
    from tests.support.broker import app_config, run_broker

    configs = [
        app_config("slow", receiver.url, receiver.secret, messages_per_second=5, message_burst=5)
    ]
    async with run_broker(configs) as handle:
        issued = await handle.client("slow").issue("henry")
        async with open_tunnel(issued["connect_url"]) as ws:
            for i in range(20):
                await ws.send(f"m{i}")
            code, reason = await closed_with(ws)
        assert (code, reason) == (1008, "rate_limited")
        await check_for(5, lambda: receiver.events_of(issued["tunnel_id"], "tunnel.closed"))
        assert len(receiver.events_of(issued["tunnel_id"], "tunnel.message")) == 5


async def test_too_many_tunnels_per_user_is_refused(receiver: WebhookReceiver) -> None:
    from tests.support.broker import app_config, run_broker

    configs = [app_config("tight", receiver.url, receiver.secret, max_tunnels_per_user=2)]
    async with run_broker(configs) as handle:
        client = handle.client("tight")
        first, second, third = [await client.issue("ivy") for _ in range(3)]
        async with open_tunnel(first["connect_url"]), open_tunnel(second["connect_url"]):
            await check_for(5, lambda: len(handle.node.hub) == 2)
            async with open_tunnel(third["connect_url"]) as ws:
                assert await closed_with(ws) == (1008, "too_many_tunnels")
            # Reconnecting an existing tunnel is a takeover, not a third tunnel.
            async with open_tunnel(first["connect_url"]) as again:
                await again.send("still fine")
                assert await recv(again) == "echo:still fine"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda url: url.replace("token=", "token=x"), (4401, "token_invalid")),
        (
            lambda url: url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"),
            (4401, "token_invalid"),
        ),
        (lambda url: url.split("?")[0], (4401, "token_invalid")),
        (lambda url: url.split("?")[0] + "?token=garbage.garbage", (4401, "token_invalid")),
    ],
    ids=["prefixed", "tampered-signature", "missing", "garbage"],
)
async def test_bad_tokens_are_refused(broker: BrokerHandle, mutate, expected) -> None:  # type: ignore[no-untyped-def]
    issued = await broker.client("demo").issue("judy")
    async with open_tunnel(mutate(issued["connect_url"])) as ws:
        assert await closed_with(ws) == expected
    assert len(broker.node.hub) == 0


async def test_expired_token_is_refused_with_4408(broker: BrokerHandle) -> None:
    from tunnel_broker.tunnels.tokens import ConnectClaims

    claims = ConnectClaims("demo", "tun_expired", "kim", time.time() - 1)
    token = broker.node.tokens.mint(claims)
    async with open_tunnel(f"{broker.ws_url}/v1/connect?token={token}") as ws:
        assert await closed_with(ws) == (4408, "token_expired")


async def test_token_of_another_app_cannot_be_rebound(broker: BrokerHandle) -> None:
    """A token minted for app "other" and edited to claim app "demo" fails, because each
    app's tokens are signed under a key of its own."""
    import base64
    import json

    issued = await broker.client("other").issue("leo")
    token = issued["connect_url"].split("token=")[1]
    app_id, _, signed = token.partition("~")
    assert app_id == "other"
    payload_b64, signature = signed.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
    payload = json.loads(raw)
    payload["a"] = "demo"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    async with open_tunnel(f"{broker.ws_url}/v1/connect?token=demo~{forged}.{signature}") as ws:
        assert await closed_with(ws) == (4401, "token_invalid")
    # And a token signed with another broker secret is refused too.
    from tunnel_broker.tunnels.tokens import ConnectClaims, TokenCodec

    foreign = TokenCodec(["a-completely-different-secret"]).mint(
        ConnectClaims("demo", "tun_x", "leo", time.time() + 60)
    )
    async with open_tunnel(f"{broker.ws_url}/v1/connect?token={foreign}") as ws:
        assert await closed_with(ws) == (4401, "token_invalid")


async def test_unknown_websocket_path_is_refused_at_handshake(broker: BrokerHandle) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        async with open_tunnel(broker.ws_url + "/v1/nope"):
            pass
    assert info.value.response.status_code == 403


async def test_simultaneous_connects_cannot_exceed_the_per_user_limit(
    receiver: WebhookReceiver,
) -> None:
    from websockets.asyncio.client import connect

    from tests.support.broker import app_config, run_broker

    configs = [app_config("tight", receiver.url, receiver.secret, max_tunnels_per_user=2)]
    async with run_broker(configs) as handle:
        client = handle.client("tight")
        issued = [await client.issue("rush") for _ in range(6)]
        sockets = await asyncio.gather(*(connect(i["connect_url"]) for i in issued))
        try:
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(ws.wait_closed(), 1.5) for ws in sockets),
                return_exceptions=True,
            )
            refused = [ws for ws, o in zip(sockets, outcomes, strict=True) if o is None]
            assert len(refused) == 4
            assert {ws.close_code for ws in refused} == {1008}
            assert len(handle.node.hub) == 2
        finally:
            for ws in sockets:
                await ws.close()

"""The reliable protocol on one broker: pushes numbered, kept until acknowledged and sent
again after a resume; client messages numbered, acknowledged once accepted, and relayed
exactly once however often they are sent; the resume window and buffer enforced; and
clients that do not ask for the protocol unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.reliable_client import SUBPROTOCOL, ReliableClient
from tests.support.reliable_world import World, world_of
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import check_for


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with world_of() as w:
        yield w


async def test_the_protocol_numbers_acknowledges_and_answers_heartbeats(world: World) -> None:
    tunnel_id, url = await world.tunnel()
    client = ReliableClient(url)
    welcome = await client.connect()
    assert welcome == {
        "tunnel_id": tunnel_id,
        "resumed": False,
        "accepted": 0,
        "resume_window_seconds": 60.0,
    }
    await check_for(5, lambda: world.kinds(tunnel_id) == ["tunnel.connected"])
    await world.api.send({"tunnels": [tunnel_id]}, data="text push")
    await world.api.send({"tunnels": [tunnel_id]}, data_base64="AAEC")
    await client.wait_for(lambda: len(client.received) == 2)
    assert client.received == ["text push", b"\x00\x01\x02"]
    await client.send("hello")
    await client.send(b"\xffbytes")
    await client.wait_for(lambda: not client.unacked)
    await check_for(5, lambda: len(world.messages(tunnel_id)) == 2)
    assert world.messages(tunnel_id) == ["hello", "base64:/2J5dGVz"]
    await client.heartbeat()
    await client.wait_for(lambda: client.heartbeats == 1)
    # Acknowledged pushes are forgotten: presence shows an open tunnel.
    presence = await world.api.http.get(f"/v1/tunnels/{tunnel_id}")
    assert presence.json()["state"] == "open"
    await client.close()
    await check_for(5, lambda: world.kinds(tunnel_id)[-1] == "tunnel.closed")
    assert world.kinds(tunnel_id) == ["tunnel.connected", *["tunnel.message"] * 2, "tunnel.closed"]
    assert client.duplicates == client.gaps == 0


async def test_pushes_during_a_cut_connection_arrive_after_the_resume_in_order_once(
    world: World,
) -> None:
    """The client's TCP connection is cut (no close: the broker goes on writing into it)
    during a stream of 1,000 pushes at 200/s; it reconnects 2 s later by another route."""
    tunnel_id, url = await world.tunnel()
    proxy = TcpProxy(world.broker.node.settings.port)
    proxy.start()
    try:
        client = ReliableClient(url)
        await client.connect(url.replace(f":{proxy.upstream[1]}/", f":{proxy.port}/"))
        stream = asyncio.create_task(world.push(tunnel_id, map(str, range(1000)), 200))
        await client.wait_for(lambda: len(client.received) >= 200)
        for n in range(10):
            await client.send(f"before {n}")
        proxy.cut()
        for n in range(10):
            await client.send(f"lost {n}")  # into the cut connection
        client.abandon()
        await asyncio.sleep(2)
        welcome = await client.connect()  # directly: the old socket is still open
        assert welcome["resumed"] is True
        # Not held up by the old socket's close timeout (10 s): the client sent again
        # what the cut connection swallowed.
        await client.send("after")
        await check_for(3, lambda: len(world.messages(tunnel_id)) == 21)
        await stream
        await client.wait_for(lambda: len(client.received) == 1000, seconds=15)
    finally:
        proxy.stop()
    assert client.received == [str(n) for n in range(1000)]
    assert client.duplicates == client.gaps == 0
    expected = [f"before {n}" for n in range(10)] + [f"lost {n}" for n in range(10)] + ["after"]
    await asyncio.sleep(0.3)
    assert world.messages(tunnel_id) == expected
    assert world.kinds(tunnel_id) == ["tunnel.connected", *["tunnel.message"] * 21]


async def test_client_messages_around_a_drop_reach_the_webhook_exactly_once_in_order(
    world: World,
) -> None:
    tunnel_id, url = await world.tunnel()
    client = ReliableClient(url)
    await client.connect()
    await check_for(5, lambda: world.kinds(tunnel_id) == ["tunnel.connected"])
    for n in range(100):
        await client.send(f"m{n}")
    client.drop()  # some were accepted, some not, some acknowledged, some not
    for n in range(100, 150):
        await client.send(f"m{n}")  # offline: kept to be sent after the resume
    welcome = await client.connect()
    assert welcome["resumed"] is True
    for n in range(150, 200):
        await client.send(f"m{n}")
    await client.wait_for(lambda: not client.unacked)
    await check_for(10, lambda: len(world.messages(tunnel_id)) >= 200)
    await asyncio.sleep(0.2)
    assert world.messages(tunnel_id) == [f"m{n}" for n in range(200)]
    assert world.kinds(tunnel_id) == ["tunnel.connected", *["tunnel.message"] * 200]


async def test_pushes_to_users_groups_and_all_reach_a_resumable_tunnel() -> None:
    async with world_of() as world:
        issued = await world.api.issue("dora", groups=["g"])
        client = ReliableClient(issued["connect_url"])
        await client.connect()
        client.drop()
        tunnel_id = issued["tunnel_id"]

        async def resumable() -> bool:
            presence = await world.api.http.get(f"/v1/tunnels/{tunnel_id}")
            return bool(presence.json()["state"] == "resumable")

        await check_for(5, resumable, what="presence shows the tunnel resumable")
        for to, data in (
            ({"users": ["dora"]}, "u"),
            ({"groups": ["g"]}, "g"),
            ({"all": True}, "a"),
        ):
            response = await world.api.send(to, data=data)
            assert response.status_code == 200, response.text
        named = await world.api.send({"tunnels": [tunnel_id]}, data="t")
        assert named.json()["not_connected"] == []
        await client.connect()
        await client.wait_for(lambda: len(client.received) == 4)
        assert client.received == ["u", "g", "a", "t"]
        assert world.kinds(tunnel_id) == ["tunnel.connected"]


async def test_a_tunnel_not_resumed_within_its_window_is_closed_once() -> None:
    async with world_of(resume_window_seconds=1) as world:
        tunnel_id, url = await world.tunnel()
        client = ReliableClient(url)
        await client.connect()
        client.drop()
        await asyncio.sleep(0.5)
        assert world.kinds(tunnel_id) == ["tunnel.connected"]
        await check_for(5, lambda: world.kinds(tunnel_id)[-1] == "tunnel.closed")
        closed = world.receiver.events_of(tunnel_id, "tunnel.closed")
        # The code the socket ended with (no close frame: 1005 or 1006).
        assert [e["reason"] for e in closed] == ["resume_expired"]
        assert closed[0]["code"] in (1005, 1006)
        gone = await world.api.http.get(f"/v1/tunnels/{tunnel_id}")
        assert gone.status_code == 404
        # Coming back later starts afresh: a new lifecycle, told by the welcome.
        welcome = await client.connect()
        assert welcome["resumed"] is False and welcome["accepted"] == 0
        await check_for(5, lambda: world.kinds(tunnel_id).count("tunnel.connected") == 2)
        await asyncio.sleep(0.3)
        assert world.kinds(tunnel_id).count("tunnel.closed") == 1


async def test_an_overflowing_resume_buffer_ends_the_tunnel_with_4410() -> None:
    async with world_of(resume_buffer_messages=10) as world:
        # Away: the eleventh push that waits ends the tunnel.
        tunnel_id, url = await world.tunnel()
        client = ReliableClient(url)
        await client.connect()
        client.drop()
        for n in range(11):
            await world.api.send({"tunnels": [tunnel_id]}, data=str(n))
        await check_for(5, lambda: world.kinds(tunnel_id)[-1] == "tunnel.closed")
        closed = world.receiver.events_of(tunnel_id, "tunnel.closed")
        assert [(e["code"], e["reason"]) for e in closed] == [(4410, "resume_buffer_full")]

        # Connected, never acknowledging: the same.
        tunnel_id, url = await world.tunnel("u2")
        silent = ReliableClient(url, ack_every=10**9, ack_after=3600)
        await silent.connect()
        for n in range(11):
            await world.api.send({"tunnels": [tunnel_id]}, data=str(n))
        await silent.wait_for(lambda: silent.closed is not None)
        assert silent.closed is not None and silent.closed.rcvd is not None
        assert (silent.closed.rcvd.code, silent.closed.rcvd.reason) == (4410, "resume_buffer_full")
        assert silent.received == [str(n) for n in range(10)]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("x1:", "invalid_frame"),
        ("m:no number", "invalid_frame"),
        ("m01:leading zero", "invalid_frame"),
        ("no header at all", "invalid_frame"),
        ("m2:skips the first", "sequence_gap"),
        ("a5:", "ack_beyond_sent"),
        (b"a0:", "invalid_frame"),
    ],
)
async def test_a_frame_outside_the_protocol_closes_the_socket_with_1002(
    world: World, frame: str | bytes, reason: str
) -> None:
    tunnel_id, url = await world.tunnel()
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        assert str(await ws.recv()).startswith("w:")
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1002, reason)
    await check_for(5, lambda: world.kinds(tunnel_id)[-1:] == ["tunnel.closed"])
    assert world.messages(tunnel_id) == []


async def test_a_bad_resume_point_is_refused_and_refusals_keep_the_subprotocol(
    world: World,
) -> None:
    _, url = await world.tunnel()
    for bad, code in ((url + "&resume=x", 1002), (url[:-4] + "AAAA", 4401)):
        async with connect(bad, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == SUBPROTOCOL  # a browser would see the close code
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_a_client_without_the_protocol_gets_raw_frames_as_before(world: World) -> None:
    tunnel_id, url = await world.tunnel()
    async with connect(url) as ws:
        assert ws.subprotocol is None
        await check_for(5, lambda: world.kinds(tunnel_id) == ["tunnel.connected"])
        await world.api.send({"tunnels": [tunnel_id]}, data="m1:looks numbered")
        assert await asyncio.wait_for(ws.recv(), 5) == "m1:looks numbered"
        await ws.send("a5:")
        await check_for(5, lambda: world.messages(tunnel_id) == ["a5:"])
    await check_for(5, lambda: world.kinds(tunnel_id)[-1] == "tunnel.closed")
    async with httpx.AsyncClient(base_url=world.broker.url) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_acks_and_heartbeats_are_not_charged_as_messages_but_floods_are_refused() -> None:
    async with world_of(messages_per_second=5, message_burst=5) as world:
        _, url = await world.tunnel()
        client = ReliableClient(url)
        await client.connect()
        for _ in range(30):
            await client.heartbeat()
        await client.wait_for(lambda: client.heartbeats == 30)
        assert client.closed is None
        for _ in range(300):  # far beyond any client's need
            await client.heartbeat()
        await client.wait_for(lambda: client.closed is not None)
        assert client.closed is not None and client.closed.rcvd is not None
        assert client.closed.rcvd.reason == "rate_limited"

        # The client's own messages keep the app's rate.
        _, url = await world.tunnel("u2")
        talker = ReliableClient(url)
        await talker.connect()
        for n in range(20):
            await talker.send(str(n))
        await talker.wait_for(lambda: talker.closed is not None)
        assert talker.closed is not None and talker.closed.rcvd is not None
        assert talker.closed.rcvd.reason == "rate_limited"

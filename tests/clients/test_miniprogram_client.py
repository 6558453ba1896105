"""The mini-program client library (``clients/miniprogram/``): its own unit tests
(``node --test``, fake sockets), then the library in Node, with the ``ws`` package as its
WebSocket, against a real broker and business server: pushes and messages exactly once and
in order across a TCP drop and a silent cut (found by its heartbeat), a takeover that stops
it, a fresh URL after 4401, a new tunnel after 4410.

The Node side is ``clients/miniprogram/harness/driver.js`` (JSON lines, its header lists
the commands), run through the Wafer tests' ``NodeProcess``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.reliable_world import World
from tests.support.reliable_world import world_of as reliable_world_of
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import check_for
from tests.wafer.node import Line, NodeProcess

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "miniprogram"
DRIVER = PACKAGE / "harness" / "driver.js"

# Fast enough for tests, and a heartbeat that finds a silent cut within a second.
QUICK = {"reconnectDelay": 200, "maxReconnectDelay": 2000, "connectTimeout": 3000}


@pytest.fixture(scope="module")
def installed() -> None:
    """The library's test tools (ws, acorn, typescript) from npm, pinned; skip without Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node and npm are needed for the mini-program client tests")
    subprocess.run(["bash", str(PACKAGE / "setup.sh")], check=True, stdout=subprocess.DEVNULL)


def test_the_library_unit_tests_pass(installed: None) -> None:
    result = subprocess.run(
        ["node", "--test", "test/"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout, result.stdout[-3000:]


@contextlib.asynccontextmanager
async def world_of(**limits: Any) -> AsyncIterator[World]:
    """Rates high enough for the bursts these tests send."""
    async with reliable_world_of(
        **{"messages_per_second": 1000, "message_burst": 1000, **limits}
    ) as world:
        yield world


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with world_of() as w:
        yield w


@pytest.fixture
async def node(installed: None) -> AsyncIterator[NodeProcess]:
    proc = NodeProcess("miniprogram-client", [str(DRIVER)])
    await proc.start()
    try:
        yield proc
    finally:
        uncaught = [line for line in proc.lines if line.get("event") == "uncaught"]
        await proc.stop()
    assert uncaught == [], uncaught


def event(kind: str, name: str = "a", **detail: Any) -> Callable[[Line], bool]:
    def matches(line: Line) -> bool:
        if line.get("event") != kind or line.get("name") != name:
            return False
        got = line.get("detail")
        return all(isinstance(got, dict) and got.get(k) == v for k, v in detail.items())

    return matches


def details(proc: NodeProcess, kind: str, name: str = "a") -> list[Any]:
    return [line.get("detail") for line in proc.lines if event(kind, name)(line)]


def received(proc: NodeProcess, name: str = "a") -> list[Any]:
    return details(proc, "message", name)


def sockets(proc: NodeProcess, name: str = "a") -> list[str]:
    """The URLs of the sockets client ``name`` opened, in order."""
    return [
        line["url"]
        for line in proc.lines
        if line.get("event") == "socket" and line.get("name") == name
    ]


async def start(proc: NodeProcess, url: str, name: str = "a", **options: Any) -> Line:
    """A client connected (its ``open`` event)."""
    mark = len(proc.lines)
    await proc.ok(cmd="start", name=name, url=url, options={**QUICK, **options})
    return await proc.wait(event("open", name), what=f"{name} open", after=mark)


async def test_text_and_binary_both_ways_and_a_close(world: World, node: NodeProcess) -> None:
    tunnel_id, url = await world.tunnel()
    opened = await start(node, url)
    assert opened["detail"]["tunnelId"] == tunnel_id
    assert opened["detail"]["resumed"] is False
    await check_for(5, lambda: world.kinds(tunnel_id) == ["tunnel.connected"])
    await world.api.send({"tunnels": [tunnel_id]}, data="text push")
    await world.api.send({"tunnels": [tunnel_id]}, data_base64="AAEC/w==")
    await check_for(5, lambda: len(received(node)) == 2)
    assert received(node) == ["text push", {"base64": "AAEC/w=="}]
    assert await node.ok(cmd="send", name="a", text="hello") is True
    assert await node.ok(cmd="send", name="a", base64=base64.b64encode(b"\xffbytes").decode())
    await check_for(5, lambda: len(world.messages(tunnel_id)) == 2)
    assert world.messages(tunnel_id) == ["hello", "base64:/2J5dGVz"]
    # The broker acknowledged both: nothing kept.

    async def nothing_pending() -> bool:
        state = await node.ok(cmd="state", name="a")
        return bool(state["pendingCount"] == 0)

    await check_for(5, nothing_pending, what="no message pending")
    await node.ok(cmd="close", name="a")
    closed = await node.wait(event("close"), what="close")
    assert closed["detail"] == {"code": 1000, "reason": "", "unconfirmed": [], "unsent": []}
    await check_for(5, lambda: world.kinds(tunnel_id)[-1] == "tunnel.closed")
    assert world.kinds(tunnel_id) == [
        "tunnel.connected",
        "tunnel.message",
        "tunnel.message",
        "tunnel.closed",
    ]
    assert world.receiver.events_of(tunnel_id, "tunnel.closed")[0]["code"] == 1000


async def test_a_dropped_connection_resumes_every_push_and_message_once_in_order(
    world: World, node: NodeProcess
) -> None:
    """The client's TCP connection is destroyed (no close frame either way) in the middle
    of a stream of pushes; it sends messages before and while it is away."""
    tunnel_id, url = await world.tunnel()
    await start(node, url)
    await check_for(5, lambda: world.kinds(tunnel_id) == ["tunnel.connected"])
    await world.push(tunnel_id, [f"p{n}" for n in range(50)])
    assert await node.ok(cmd="sendMany", name="a", prefix="m", count=50, **{"from": 0}) == 50
    await check_for(5, lambda: len(received(node)) >= 50)

    stream = asyncio.create_task(world.push(tunnel_id, [f"p{n}" for n in range(50, 250)], 400))
    await check_for(5, lambda: len(received(node)) >= 80)
    await node.ok(cmd="drop", name="a")
    # Away (or about to notice): kept, numbered, sent after the resume.
    assert await node.ok(cmd="sendMany", name="a", prefix="m", count=50, **{"from": 50}) == 50
    await node.wait(event("resumed"), seconds=10, what="resumed")
    await stream
    await check_for(15, lambda: len(received(node)) >= 250)
    await check_for(10, lambda: len(world.messages(tunnel_id)) >= 100)
    await asyncio.sleep(0.3)  # nothing more arrives: no repeats
    assert received(node) == [f"p{n}" for n in range(250)]
    assert world.messages(tunnel_id) == [f"m{n}" for n in range(100)]
    # The business server saw nothing of the drop.
    assert world.kinds(tunnel_id) == ["tunnel.connected", *["tunnel.message"] * 100]
    assert len(details(node, "open")) == 1
    assert details(node, "close") == []
    reconnecting = details(node, "reconnecting")
    assert reconnecting and reconnecting[0]["code"] == 1006, reconnecting


async def test_a_silent_cut_is_found_by_the_heartbeat_and_resumed(
    world: World, node: NodeProcess
) -> None:
    """Through a proxy that stops forwarding (nothing closed, as a phone whose network
    vanished): pushes and messages of both sides vanish into the old socket; the
    heartbeat finds it dead, and the resume once the network is back delivers them."""
    tunnel_id, url = await world.tunnel()
    broker_port = world.broker.node.settings.port
    proxy = TcpProxy(broker_port)
    proxy.start()
    try:
        proxied = url.replace(f":{broker_port}/", f":{proxy.port}/")
        await start(node, proxied, heartbeatInterval=300, heartbeatTimeout=500)
        await world.push(tunnel_id, [f"p{n}" for n in range(20)])
        await node.ok(cmd="sendMany", name="a", prefix="m", count=10, **{"from": 0})
        await check_for(
            5, lambda: len(received(node)) == 20 and len(world.messages(tunnel_id)) == 10
        )

        proxy.cut()
        await world.push(tunnel_id, [f"p{n}" for n in range(20, 40)])
        await node.ok(cmd="sendMany", name="a", prefix="m", count=10, **{"from": 10})
        found = await node.wait(event("reconnecting", reason="heartbeat_timeout"), seconds=5)
        assert found["detail"]["code"] == 1006
        proxy.restore()
        await node.wait(event("resumed"), seconds=10, what="resumed")
        await check_for(10, lambda: len(received(node)) >= 40)
        await check_for(10, lambda: len(world.messages(tunnel_id)) >= 20)
        await asyncio.sleep(0.5)
    finally:
        proxy.stop()
    assert received(node) == [f"p{n}" for n in range(40)]
    assert world.messages(tunnel_id) == [f"m{n}" for n in range(20)]
    assert world.kinds(tunnel_id) == ["tunnel.connected", *["tunnel.message"] * 20]
    assert details(node, "close") == []


async def test_a_takeover_by_another_client_stops_the_first(
    world: World, node: NodeProcess
) -> None:
    tunnel_id, url = await world.tunnel()
    await start(node, url, name="a")
    await start(node, url, name="b")  # the same connect URL, elsewhere
    closed = await node.wait(event("close", "a"), what="a closed")
    assert (closed["detail"]["code"], closed["detail"]["reason"]) == (4409, "replaced")
    assert sockets(node, "a") == [url]
    await asyncio.sleep(1.5)  # longer than any backoff it would have used
    assert sockets(node, "a") == [url]
    assert details(node, "reconnecting", "a") == []
    # The tunnel lives on with b.
    await world.push(tunnel_id, ["for b"])
    await check_for(5, lambda: received(node, "b") == ["for b"])
    assert received(node, "a") == []
    await node.ok(cmd="send", name="b", text="from b")
    await check_for(5, lambda: world.messages(tunnel_id) == ["from b"])
    assert world.kinds(tunnel_id) == ["tunnel.connected", "tunnel.message"]


async def test_an_invalid_token_gets_a_fresh_url_from_get_connect_url(
    world: World, node: NodeProcess
) -> None:
    _, url = await world.tunnel()
    tampered = url[:-4] + "AAAA"
    await node.ok(
        cmd="start",
        name="a",
        url=tampered,
        getConnectUrl=True,
        options={**QUICK, "reconnectDelay": 50},
    )
    reconnecting = await node.wait(event("reconnecting"), what="reconnecting")
    assert (reconnecting["detail"]["code"], reconnecting["detail"]["reason"]) == (
        4401,
        "token_invalid",
    )
    await node.wait(lambda line: line.get("event") == "need_url", what="need_url")
    tunnel_id, fresh = await world.tunnel("u2")
    await node.ok(cmd="url", name="a", url=fresh)
    opened = await node.wait(event("open"), what="open")
    assert opened["detail"]["tunnelId"] == tunnel_id
    assert sockets(node) == [tampered, fresh]  # a new tunnel: no resume
    await node.ok(cmd="send", name="a", text="hi")
    await check_for(5, lambda: world.messages(tunnel_id) == ["hi"])


async def test_a_full_resume_buffer_ends_the_tunnel_and_the_client_starts_a_new_one(
    node: NodeProcess,
) -> None:
    async with world_of(resume_buffer_messages=10) as world:
        tunnel_id, url = await world.tunnel()
        # A client that does not acknowledge (so the eleventh push overflows).
        await start(node, url, ackEvery=1000, ackDelay=60000)
        await node.ok(cmd="send", name="a", text="before")
        await check_for(5, lambda: world.messages(tunnel_id) == ["before"])
        await world.push(tunnel_id, [f"p{n}" for n in range(10)])
        overflow = await world.api.send({"tunnels": [tunnel_id]}, data="p10")
        assert overflow.json()["not_connected"] == [tunnel_id]  # it ended the tunnel
        reconnecting = await node.wait(event("reconnecting"), what="reconnecting")
        assert (reconnecting["detail"]["code"], reconnecting["detail"]["reason"]) == (
            4410,
            "resume_buffer_full",
        )
        await check_for(5, lambda: len(details(node, "open")) == 2)
        assert details(node, "open")[1]["resumed"] is False
        assert sockets(node) == [url, url]  # anew: the same URL, no resume
        assert received(node) == [f"p{n}" for n in range(10)]
        # The new lifecycle numbers from 1 again, both ways.
        await world.push(tunnel_id, ["after"])
        await node.ok(cmd="send", name="a", text="again")
        await check_for(5, lambda: received(node)[-1:] == ["after"])
        await check_for(5, lambda: world.messages(tunnel_id) == ["before", "again"])
        closed = world.receiver.events_of(tunnel_id, "tunnel.closed")
        assert [(e["code"], e["reason"]) for e in closed] == [(4410, "resume_buffer_full")]
        assert world.kinds(tunnel_id) == [
            "tunnel.connected",
            "tunnel.message",
            "tunnel.closed",
            "tunnel.connected",
            "tunnel.message",
        ]

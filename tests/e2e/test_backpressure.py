"""One broker under back-pressure: its business server is down and the app's buffer is
full, so it stops reading the app's sockets. What a client then experiences (docs/api.md,
"When the business server cannot keep up") is checked here against a real broker, a
real receiver that goes down, and real WebSocket clients that send no pings of their own
(like ``wx.connectSocket``).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import BrokerHandle, app_config, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.servers import BrokerProcess, write_apps_file
from tests.support.waiting import check_for

# The smallest buffer an app may have: back-pressure engages after ten events.
SMALL = {"webhook_buffer_events": 10}


@pytest.fixture
async def quiet_receiver(receiver: WebhookReceiver) -> WebhookReceiver:
    receiver.on_events = None  # no echoes: only what clients send is counted
    return receiver


async def open_quiet(url: str) -> ClientConnection:
    return await connect(url, ping_interval=None, open_timeout=10, close_timeout=5)


async def open_accepted(receiver: WebhookReceiver, issued: dict[str, Any]) -> ClientConnection:
    """Open the issued tunnel and wait until the receiver has its ``tunnel.connected``."""
    ws = await open_quiet(issued["connect_url"])
    tunnel_id = issued["tunnel_id"]
    await check_for(5, lambda: kinds(receiver, tunnel_id) == ["tunnel.connected"])
    return ws


def numbers(receiver: WebhookReceiver, tunnel_id: str) -> list[int]:
    return [int(e["data"]) for e in receiver.events_of(tunnel_id, "tunnel.message")]


def kinds(receiver: WebhookReceiver, tunnel_id: str) -> list[str]:
    return [e["type"] for e in receiver.events_of(tunnel_id) if e["type"] != "tunnel.message"]


def small_app(receiver: WebhookReceiver) -> dict[str, Any]:
    """5 messages/s with a burst of 10, and a buffer full after ten events."""
    return app_config(
        "demo", receiver.url, receiver.secret, messages_per_second=5, message_burst=10, **SMALL
    )


@pytest.fixture
async def held_broker(quiet_receiver: WebhookReceiver) -> AsyncIterator[BrokerHandle]:
    """Keepalive deadlines of 0.3 s: a held socket outlives many of them."""
    async with run_broker(
        [small_app(quiet_receiver)], ping_interval=0.3, ping_timeout=0.3, connect_wait_seconds=30.0
    ) as handle:
        yield handle


async def test_a_held_socket_outlives_many_keepalive_deadlines_and_loses_nothing(
    held_broker: BrokerHandle, quiet_receiver: WebhookReceiver
) -> None:
    demo = held_broker.client("demo")
    issued = await demo.issue("ada")
    tunnel_id = issued["tunnel_id"]
    ws = await open_accepted(quiet_receiver, issued)
    async with quiet_receiver.outage():
        for n in range(1, 21):  # 4 s at 5/s: ten fill the buffer, the rest wait unread
            await ws.send(str(n))
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=held_broker.url) as ops:
            metrics = (await ops.get("/metrics")).text
        assert 'tb_backpressure{app="demo"} 1.0' in metrics
        assert 'tb_tunnels_held{app="demo"} 1.0' in metrics
        # Pushes still reach the held client (its writes are not held).
        response = await demo.send({"tunnels": [tunnel_id]}, "still here")
        assert response.json()["accepted"] == 1
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"
    await check_for(20, lambda: len(numbers(quiet_receiver, tunnel_id)) == 20)
    assert numbers(quiet_receiver, tunnel_id) == list(range(1, 21))
    assert ws.protocol.close_rcvd is None  # never closed: no 1011, no 1008
    await ws.close()
    await check_for(5, lambda: kinds(quiet_receiver, tunnel_id)[-1] == "tunnel.closed")
    assert kinds(quiet_receiver, tunnel_id) == ["tunnel.connected", "tunnel.closed"]


async def test_what_piled_up_unread_is_not_charged_as_a_burst(
    quiet_receiver: WebhookReceiver,
) -> None:
    """At 4/s against a limit of 5/s with a burst of 10: 24 messages wait unread during a
    6 s outage and arrive at once afterwards, which is not a burst the client made. (The
    default keepalive: nothing but the rate limit could close this socket.)"""
    async with run_broker([small_app(quiet_receiver)], connect_wait_seconds=30.0) as broker:
        await pile_up_then_burst(broker, quiet_receiver)


async def pile_up_then_burst(broker: BrokerHandle, quiet_receiver: WebhookReceiver) -> None:
    issued = await broker.client("demo").issue("bea")
    tunnel_id = issued["tunnel_id"]
    ws = await open_accepted(quiet_receiver, issued)
    async with quiet_receiver.outage():
        for n in range(1, 25):
            await ws.send(str(n))
            await asyncio.sleep(0.25)
    await check_for(20, lambda: len(numbers(quiet_receiver, tunnel_id)) == 24)
    assert ws.protocol.close_rcvd is None
    # The rate limit itself still holds: a real burst of 100 (more than burst and credit
    # together, whatever the pause) is refused.
    with pytest.raises(ConnectionClosed) as closed:
        for n in range(25, 125):
            await ws.send(str(n))
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "rate_limited")


async def test_a_takeover_during_back_pressure_keeps_the_old_sockets_messages_first(
    held_broker: BrokerHandle, quiet_receiver: WebhookReceiver
) -> None:
    issued = await held_broker.client("demo").issue("cy")
    tunnel_id = issued["tunnel_id"]
    old = await open_accepted(quiet_receiver, issued)
    async with quiet_receiver.outage():
        for n in range(1, 16):
            await old.send(str(n))
            await asyncio.sleep(0.2)
        # The client gives up on the old socket and opens another with the same URL; the
        # broker admits it once the buffer has room again, after the outage.
        opening = asyncio.ensure_future(open_quiet(issued["connect_url"]))
        await asyncio.sleep(1)
    new = await opening
    for n in range(16, 21):
        await new.send(str(n))
        await asyncio.sleep(0.2)
    with pytest.raises(ConnectionClosed) as replaced:
        await asyncio.wait_for(old.recv(), 10)
    assert replaced.value.rcvd is not None and replaced.value.rcvd.code == 4409
    await check_for(20, lambda: len(numbers(quiet_receiver, tunnel_id)) == 20)
    assert numbers(quiet_receiver, tunnel_id) == list(range(1, 21))
    await new.close()
    await check_for(5, lambda: kinds(quiet_receiver, tunnel_id)[-1] == "tunnel.closed")
    assert kinds(quiet_receiver, tunnel_id) == ["tunnel.connected", "tunnel.closed"]


async def test_a_memory_broker_stopped_during_an_outage_keeps_its_events_for_the_next(
    tmp_path: Path, quiet_receiver: WebhookReceiver
) -> None:
    config = app_config("demo", quiet_receiver.url, quiet_receiver.secret)
    apps = write_apps_file(tmp_path / "apps.json", [config])
    kept = tmp_path / "state" / "undelivered.jsonl"
    args = [
        "--apps-file",
        str(apps),
        "--drain-seconds",
        "0.5",
        "--shutdown-flush-seconds",
        "1",
        "--webhook-retry-max-delay",
        "0.5",
    ]
    env = {"TB_SECRET_KEY": "handover-test-secret-0123456789", "TB_HANDOVER_FILE": str(kept)}
    first = BrokerProcess(args, env=env)
    headers = {"authorization": f"Bearer {config['api_keys'][0]}"}
    await first.start()
    try:
        async with httpx.AsyncClient(base_url=first.url, headers=headers) as http:
            issued: dict[str, Any] = (await http.post("/v1/tunnels", json={"user_id": "di"})).json()
        tunnel_id = issued["tunnel_id"]
        ws = await open_accepted(quiet_receiver, issued)
        async with quiet_receiver.outage():
            for n in range(1, 6):
                await ws.send(str(n))
            await asyncio.sleep(0.5)
            first.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            assert await first.wait(30) == 0
    finally:
        first.stop()
    assert "kept for later delivery" in first.read_output()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert numbers(quiet_receiver, tunnel_id) == []

    second = BrokerProcess(args, env=env)
    await second.start()
    try:
        await check_for(10, lambda: kinds(quiet_receiver, tunnel_id)[-1] == "tunnel.closed")
        assert not kept.exists()
        # Everything the first process held, in order, its tunnel.closed last.
        assert numbers(quiet_receiver, tunnel_id) == [1, 2, 3, 4, 5]
        closed_event = quiet_receiver.events_of(tunnel_id, "tunnel.closed")[0]
        assert (closed_event["code"], closed_event["reason"]) == (1012, "broker_restarting")
        path = issued["connect_url"].split("/v1/connect", 1)[1]
        again = await open_quiet(f"ws://127.0.0.1:{second.port}/v1/connect{path}")
        await check_for(5, lambda: len(kinds(quiet_receiver, tunnel_id)) == 3)
        await again.close()
        await check_for(5, lambda: len(kinds(quiet_receiver, tunnel_id)) == 4)
        assert kinds(quiet_receiver, tunnel_id) == [
            "tunnel.connected",
            "tunnel.closed",
            "tunnel.connected",
            "tunnel.closed",
        ]
    finally:
        second.stop()
    assert os.environ["TB_HANDOVER_FILE"] == ""  # other tests' brokers keep nothing

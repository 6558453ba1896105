"""Back-pressure under a real outage: three broker processes on one redis-server, sixty
tunnels sending numbered messages at 5/s, a webhook receiver that goes down for 30 s or
60 s, and an app buffer small enough (500 events) that back-pressure engages at once.

Nothing may be lost, duplicated or reordered; no tunnel may be closed for its rate or
its keepalive; every ``tunnel.connected`` is followed by exactly one ``tunnel.closed``;
and a third of the clients open a new socket on another pod in the middle of the
outage (a takeover), whose messages must not overtake those the old pod still holds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, cluster_of
from tests.support.fault_scenarios import ARGS, LIMITS, PODS
from tests.support.redis_server import RedisServer
from tests.support.traffic import SteadyClient, check
from tests.support.waiting import check_for

TUNNELS = 60


async def start_clients(cluster: Cluster) -> list[SteadyClient]:
    clients = []
    for i in range(TUNNELS):
        issued = await cluster.issue(i % PODS, f"user-{i}")
        urls = [cluster.on_pod(pod, issued) for pod in range(PODS)]
        clients.append(SteadyClient(issued["tunnel_id"], urls, pod=i % PODS))
    return clients


async def outage_run(cluster: Cluster, seconds: float) -> None:
    clients = await start_clients(cluster)
    stop = asyncio.Event()
    senders = [asyncio.create_task(c.run(stop)) for c in clients]
    moves: list[asyncio.Task[None]] = []
    await asyncio.sleep(3)
    async with cluster.receiver.outage():
        await asyncio.sleep(seconds / 3)
        moves = [asyncio.create_task(c.move_to((c.pod + 1) % PODS)) for c in clients[::3]]
        await asyncio.sleep(seconds * 2 / 3)
    recovered_at = time.monotonic()
    await asyncio.gather(*moves)
    await asyncio.sleep(5)
    stop.set()
    await asyncio.gather(*senders)
    await asyncio.gather(*(c.finish() for c in clients))
    receiver = cluster.receiver

    def all_closed() -> bool:
        closed = {e["tunnel_id"] for e in receiver.events if e["type"] == "tunnel.closed"}
        return all(c.tunnel_id in closed for c in clients)

    await check_for(120, all_closed, interval=0.2, what="every tunnel.closed")
    caught_up = time.monotonic() - recovered_at
    verdict = check(clients, receiver.events)
    print(
        f"outage {seconds}s: sent {verdict.sent} delivered {verdict.delivered} "
        f"lost {verdict.lost} duplicated {verdict.duplicated} "
        f"out of order {verdict.out_of_order} punished {len(verdict.punished)} "
        f"unpaired {len(verdict.unpaired)}; caught up {caught_up:.1f}s after"
    )
    assert verdict.sent >= TUNNELS * 5 * seconds * 0.8, "traffic did not flow"
    assert verdict.punished == []
    assert verdict.unpaired == []
    assert (verdict.lost, verdict.duplicated, verdict.out_of_order) == (0, 0, 0)
    moved = clients[::3]
    assert all(c.sockets >= 2 for c in moved)
    assert all((4409, "replaced") in c.closes for c in moved)


@pytest.mark.parametrize("seconds", [30, 60])
async def test_an_outage_under_steady_traffic_loses_and_reorders_nothing(
    tmp_path: Path, redis_server: RedisServer, seconds: int
) -> None:
    async with cluster_of(
        tmp_path, redis_server, limits=LIMITS, args=ARGS, on_events=None
    ) as cluster:
        await outage_run(cluster, seconds)


async def test_a_pod_stopped_during_an_outage_hands_its_events_over(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """SIGTERM to one pod while the receiver is down: its tunnels close (1012) and move to
    the other pods, and what it could not deliver (``tunnel.closed`` included) reaches
    the business server through another pod, before anything newer of those tunnels."""
    async with cluster_of(
        tmp_path, redis_server, limits=LIMITS, args=ARGS, on_events=None
    ) as cluster:
        clients = await start_clients(cluster)
        stop = asyncio.Event()
        senders = [asyncio.create_task(c.run(stop)) for c in clients]
        await asyncio.sleep(3)
        stopped = cluster.pods[0]
        async with cluster.receiver.outage():
            await asyncio.sleep(5)
            stopped.terminate()
            assert await stopped.wait(30) == 0
            await asyncio.sleep(5)
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*senders)
        await asyncio.gather(*(c.finish() for c in clients))
        receiver = cluster.receiver

        def closes_of(client: SteadyClient) -> int:
            return len(receiver.events_of(client.tunnel_id, "tunnel.closed"))

        moved = [c for c in clients if c.sockets >= 2]
        await check_for(
            120,
            lambda: all(closes_of(c) == (2 if c in moved else 1) for c in clients),
            interval=0.2,
            what="every tunnel.closed",
        )
        verdict = check(clients, receiver.events)
        print(
            f"pod stopped in an outage: sent {verdict.sent} delivered {verdict.delivered} "
            f"lost {verdict.lost} duplicated {verdict.duplicated} "
            f"out of order {verdict.out_of_order} unpaired {len(verdict.unpaired)}"
        )
        assert len(moved) == TUNNELS // PODS  # the stopped pod's, and only those
        for client in moved:
            reasons = [e["reason"] for e in receiver.events_of(client.tunnel_id, "tunnel.closed")]
            assert reasons[0] == "broker_restarting"
        assert "handed over" in stopped.read_output() or "kept" in stopped.read_output()
        assert verdict.unpaired == []
        assert verdict.punished == []
        assert (verdict.lost, verdict.duplicated, verdict.out_of_order) == (0, 0, 0)

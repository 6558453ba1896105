"""Three broker pods on highly available Redis: a Redis Cluster (three masters, a replica
each) and a master with a replica under three sentinels, all real servers on loopback.

Routing and presence work across pods and shards, a killed pod's tunnels are each
reported closed once, and when a Redis master is killed under steady traffic the pods
recover by themselves: API callers get 503 while it lasts (never a silent loss), open
tunnels keep relaying, and afterwards presence and routing are right again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.cluster import LEASE, Cluster, cluster_of
from tests.support.receiver import WebhookReceiver, echo_messages
from tests.support.redis_topologies import RedisCluster, RedisSentinels, as_environment, running
from tests.support.waiting import check_for

HA = RedisCluster | RedisSentinels


@pytest.fixture(params=["cluster", "sentinel"])
def ha_redis(request: pytest.FixtureRequest) -> Iterator[HA]:
    servers: HA = RedisCluster() if request.param == "cluster" else RedisSentinels()
    with running(servers):
        yield servers


async def recv(ws: ClientConnection, seconds: float = 5) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), seconds)


async def push(cluster: Cluster, pod: int, to: dict[str, Any], data: str) -> httpx.Response:
    async with cluster.api(pod) as http:
        return await http.post("/v1/messages", json={"messages": [{"to": to, "data": data}]})


async def presence(cluster: Cluster, pod: int, group: str) -> list[tuple[str, str]]:
    """(tunnel, pod holding it) of a group's tunnels, as pod ``pod`` sees them."""
    async with cluster.api(pod) as http:
        response = await http.get(f"/v1/groups/{group}/tunnels")
    assert response.status_code == 200, response.text
    return sorted((t["tunnel_id"], t["node_id"]) for t in response.json()["tunnels"])


def shard_channels(servers: RedisCluster) -> dict[int, set[str]]:
    """Master port -> the shard channels subscribed there."""
    return {
        master.port: set(master.client().execute_command("PUBSUB SHARDCHANNELS"))
        for master in servers.masters()
    }


class Room:
    """Six users, two tunnels on each pod, all in the group ``room``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.issued: list[dict[str, Any]] = []
        self.sockets: list[ClientConnection] = []

    async def open(self) -> None:
        for i in range(6):
            issued = await self.cluster.issue(i % 3, f"user{i}", groups=["room"])
            self.issued.append(issued)
            self.sockets.append(await connect(self.cluster.on_pod(i % 3, issued)))
        await check_for(10, lambda: len(self.cluster.receiver.events) >= 6)

    def on_pod(self, pod: int) -> list[int]:
        return [i for i in range(6) if i % 3 == pod]

    async def expect_everywhere(self, data: str, living: list[int] | None = None) -> None:
        for i in living if living is not None else range(6):
            assert await recv(self.sockets[i]) == data, f"user{i}"

    async def routes_from_every_pod(self, pods: list[int]) -> None:
        """Pushes to a user, the group and everyone from each pod reach every tunnel."""
        living = [i for i in range(6) if i % 3 in pods]
        for pod in pods:
            for i in living:
                response = await push(self.cluster, pod, {"users": [f"user{i}"]}, f"u{i}-{pod}")
                assert response.status_code == 200, response.text
                assert await recv(self.sockets[i]) == f"u{i}-{pod}"
            response = await push(self.cluster, pod, {"groups": ["room"]}, f"g{pod}")
            assert response.status_code == 200
            await self.expect_everywhere(f"g{pod}", living)
            response = await push(self.cluster, pod, {"all": True}, f"a{pod}")
            assert response.status_code == 200
            await self.expect_everywhere(f"a{pod}", living)

    def expected_presence(self, pods: list[int]) -> list[tuple[str, str]]:
        return sorted(
            (self.issued[i]["tunnel_id"], f"pod-{i % 3}") for i in range(6) if i % 3 in pods
        )

    async def right_everywhere(self) -> None:
        """Presence and routing as they should be, seen from and sent through each pod."""
        for pod in range(3):
            assert await presence(self.cluster, pod, "room") == self.expected_presence([0, 1, 2])
        await self.routes_from_every_pod([0, 1, 2])

    def close(self) -> None:
        for ws in self.sockets:
            ws.transport.abort()


def cli(servers: HA, *args: str) -> dict[str, str]:
    """Run ``tunnel-broker apps ...`` against ``servers``, configured by environment."""
    done = subprocess.run(
        [sys.executable, "-m", "tunnel_broker", "apps", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, **as_environment(servers.broker_args())},
    )
    return dict(line.split(" = ", 1) for line in done.stdout.strip().splitlines())


async def another_app_made_with_the_cli_works_everywhere(cluster: Cluster, servers: HA) -> None:
    """An app created by the CLI is in force on every pod; on a cluster its keys are on
    another shard than the first app's, and each app's operations stay on its own."""
    app_id = "fresh"
    if isinstance(servers, RedisCluster):
        demo_shard = servers.master_of("tb:{demo}:t:x")
        app_id = next(
            f"fresh{i}"
            for i in range(100)
            if servers.master_of(f"tb:{{fresh{i}}}:t:x") != demo_shard
        )
    receiver = WebhookReceiver(secret="set once the app exists", on_events=echo_messages)
    async with receiver.serving():
        made = cli(servers, "create", "--id", app_id, "--webhook-url", receiver.url)
        receiver.secret = made["webhook_secret"]
        headers = {"authorization": f"Bearer {made['api_key']}"}

        async def issued_everywhere() -> list[dict[str, Any]] | None:
            issued = []
            for pod in cluster.pods:
                async with httpx.AsyncClient(base_url=pod.url, headers=headers) as http:
                    response = await http.post("/v1/tunnels", json={"user_id": "zoe"})
                    if response.status_code != 201:
                        return None
                    issued.append(response.json())
            return issued

        issued = await check_for(10, issued_everywhere, interval=0.2, what="the app everywhere")
        async with connect(cluster.on_pod(0, issued[0])) as ws:
            await check_for(10, lambda: receiver.events_of(issued[0]["tunnel_id"]))
            async with httpx.AsyncClient(base_url=cluster.pods[2].url, headers=headers) as http:
                pushed = await http.post(
                    "/v1/messages", json={"messages": [{"to": {"users": ["zoe"]}, "data": "hi"}]}
                )
                assert pushed.status_code == 200
            assert await recv(ws) == "hi"
            await ws.send("ping")
            assert await recv(ws) == "echo:ping"


async def test_pods_route_agree_on_presence_and_report_a_killed_pod_once(
    tmp_path: Path, ha_redis: HA
) -> None:
    async with cluster_of(tmp_path, ha_redis) as cluster:
        room = Room(cluster)
        try:
            await room.open()
            await room.routes_from_every_pod([0, 1, 2])
            views = [await presence(cluster, pod, "room") for pod in range(3)]
            assert views[0] == views[1] == views[2] == room.expected_presence([0, 1, 2])
            if isinstance(ha_redis, RedisCluster):
                shards = shard_channels(ha_redis)
                # Pod-to-pod messages go over sharded pub/sub, each channel on its shard.
                assert set().union(*shards.values()) >= {
                    "tb:node:pod-0",
                    "tb:node:pod-1",
                    "tb:node:pod-2",
                    "tb:broadcast",
                }
                assert len([m for m, channels in shards.items() if channels]) >= 2

            await another_app_made_with_the_cli_works_everywhere(cluster, ha_redis)

            proc = cluster.pods[2].proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            lost = {room.issued[i]["tunnel_id"] for i in room.on_pod(2)}

            def closed() -> list[str]:
                return [
                    e["tunnel_id"] for e in cluster.receiver.events if e["type"] == "tunnel.closed"
                ]

            await check_for(LEASE * 4, lambda: set(closed()) == lost, what="node_lost")
            await asyncio.sleep(LEASE)  # no second reaper reports them again
            assert sorted(closed()) == sorted(lost)
            for pod in (0, 1):
                assert await presence(cluster, pod, "room") == room.expected_presence([0, 1])
            await room.routes_from_every_pod([0, 1])
        finally:
            room.close()


class SteadyTraffic:
    """Pushes to users through every pod in turn, every 50 ms, and a client message
    every 100 ms from each tunnel; what each socket receives is collected."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.statuses: list[tuple[int, int, int]] = []  # (push number, user, HTTP status)
        self.sent: list[tuple[int, str]] = []  # (user, client message)
        self.received: list[list[str]] = [[] for _ in range(6)]
        self._tasks: list[asyncio.Task[None]] = []
        self._running = True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._push())] + [
            loop.create_task(self._client(i)) for i in range(6)
        ]
        self._tasks += [loop.create_task(self._read(i)) for i in range(6)]

    async def _push(self) -> None:
        n = 0
        while self._running and n < 2000:
            user = n % 6
            try:
                response = await push(self.room.cluster, n % 3, {"users": [f"user{user}"]}, f"s{n}")
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            self.statuses.append((n, user, status))
            n += 1
            await asyncio.sleep(0.05)

    async def _client(self, i: int) -> None:
        n = 0
        while self._running and n < 1000:
            message = f"m{i}-{n}"
            await self.room.sockets[i].send(message)
            self.sent.append((i, message))
            n += 1
            await asyncio.sleep(0.1)

    async def _read(self, i: int) -> None:
        while True:
            self.received[i].append(str(await self.room.sockets[i].recv()))

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks[:7])

    async def finish_and_check(self) -> list[int]:
        """Stop, collect the last echoes, and check nothing was lost; the HTTP statuses
        of the pushes."""
        await self.stop()
        await asyncio.sleep(3.0)  # the last echoes
        await self.stop_reading()
        statuses = [status for _, _, status in self.statuses]
        assert set(statuses) <= {200, 503}, "only clear answers, never a timeout or 500"
        # Every push answered 200 reached its user's tunnel: none silently lost.
        for n, user, status in self.statuses:
            if status == 200:
                assert f"s{n}" in self.received[user], f"push s{n} to user{user} lost"
        # Open tunnels kept relaying: every client message came back from the business
        # server (through the webhook and its reply), exactly once.
        for user, message in self.sent:
            assert self.received[user].count(f"echo:{message}") == 1, message
        return statuses

    async def stop_reading(self) -> None:
        await self._cancel(self._tasks[7:])

    async def cancel(self) -> None:
        """Everything at once (a test that failed midway)."""
        await self._cancel(self._tasks)

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def under_traffic(cluster: Cluster) -> AsyncIterator[tuple[Room, SteadyTraffic]]:
    """The room open and steady traffic flowing for a second."""
    room = Room(cluster)
    traffic = SteadyTraffic(room)
    try:
        await room.open()
        traffic.start()
        await asyncio.sleep(1.0)
        yield room, traffic
    finally:
        await traffic.cancel()
        room.close()


async def ready_everywhere(cluster: Cluster) -> bool:
    async with httpx.AsyncClient(timeout=2) as http:
        for pod in cluster.pods:
            if (await http.get(pod.url + "/readyz")).status_code != 200:
                return False
    for pod in range(len(cluster.pods)):
        if (await push(cluster, pod, {"users": ["nobody"]}, "probe")).status_code != 200:
            return False
    return True


async def metric(cluster: Cluster, pod: int, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(cluster.pods[pod].url + "/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


RECOVERY_SECONDS = 15.0  # documented in docs/operations.md ("What a failover looks like")


async def test_killing_the_redis_master_under_traffic_loses_nothing_and_heals(
    tmp_path: Path, ha_redis: HA
) -> None:
    async with cluster_of(tmp_path, ha_redis) as cluster, under_traffic(cluster) as (room, traffic):
        pids = [p.proc.pid for p in cluster.pods if p.proc is not None]
        if isinstance(ha_redis, RedisCluster):
            master = ha_redis.master_of("tb:{demo}:t:x")  # the shard holding the app
        else:
            master = ha_redis.current_master()
        killed_at = asyncio.get_running_loop().time()
        master.kill()
        if isinstance(ha_redis, RedisSentinels):
            ha_redis.wait_for_new_master(master)
        await asyncio.sleep(2.0)  # let the outage show before waiting for its end
        await check_for(RECOVERY_SECONDS, lambda: ready_everywhere(cluster), what="recovery")
        recovered = asyncio.get_running_loop().time() - killed_at
        await asyncio.sleep(1.0)
        statuses = await traffic.finish_and_check()
        print(
            f"{type(ha_redis).__name__}: ready everywhere {recovered:.1f} s after the kill;"
            f" pushes {statuses.count(200)} ok, {statuses.count(503)} refused (503)"
        )
        assert [p.proc.pid for p in cluster.pods if p.proc is not None] == pids  # no restart
        await room.right_everywhere()
        failovers = [await metric(cluster, pod, "tb_redis_failovers_total") for pod in range(3)]
        assert all(seen >= 1 for seen in failovers), failovers


async def test_a_resharding_under_traffic_is_followed_without_loss(tmp_path: Path) -> None:
    """The slots of the app, of a pod's channel and of the broadcast channel move to other
    masters while pushes and client messages flow: data calls follow ``ASK``/``MOVED``,
    subscriptions follow the ``sunsubscribe`` of the shard that gave the slot away."""
    servers = RedisCluster()
    with running(servers):
        async with (
            cluster_of(tmp_path, servers) as cluster,
            under_traffic(cluster) as (room, traffic),
        ):
            moved = {}
            for key in ("tb:{demo}:t:x", "tb:node:pod-0", "tb:broadcast"):
                moved[key] = await asyncio.to_thread(servers.move_slot_of, key)
                await asyncio.sleep(0.5)
            await check_for(15, lambda: ready_everywhere(cluster), what="ready")
            await asyncio.sleep(1.0)
            await traffic.finish_and_check()
            # The channels are subscribed where their slots went.
            shards = shard_channels(servers)
            assert "tb:node:pod-0" in shards[moved["tb:node:pod-0"].port]
            assert "tb:broadcast" in shards[moved["tb:broadcast"].port]
            await room.right_everywhere()


async def test_a_burst_of_closes_keeps_cluster_pods_ready_and_they_stop_cleanly(
    tmp_path: Path,
) -> None:
    """300 tunnels of one pod closing at once: many Redis calls to one shard at the same
    moment wait their turn (the cluster client's node pools raised when full, and every
    pod took Redis for unreachable); and a pod on a cluster stops with exit code 0."""
    servers = RedisCluster()
    with running(servers):
        async with cluster_of(tmp_path, servers, pods=2, on_events=None) as cluster:
            issued = [await cluster.issue(0, f"burst{i}") for i in range(300)]
            sockets = await asyncio.gather(*(connect(cluster.on_pod(0, i)) for i in issued))
            await check_for(20, lambda: len(cluster.receiver.events) >= 300, what="connected")
            unready = 0

            async def watch() -> None:
                nonlocal unready
                async with httpx.AsyncClient() as http:
                    while True:
                        for pod in cluster.pods:
                            if (await http.get(pod.url + "/readyz")).status_code != 200:
                                unready += 1
                        await asyncio.sleep(0.02)

            watcher = asyncio.get_running_loop().create_task(watch())
            await asyncio.gather(*(ws.close() for ws in sockets))
            await check_for(
                20,
                lambda: (
                    len([e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]) == 300
                ),
                what="every close reported",
            )
            watcher.cancel()
            assert unready == 0, "a pod turned unready during the burst"
            for pod in range(2):
                assert await metric(cluster, pod, "tb_redis_outages_total") == 0
            cluster.pods[0].terminate()
            assert await cluster.pods[0].wait(20) == 0
            assert "shutdown failed" not in cluster.pods[0].read_output().lower()

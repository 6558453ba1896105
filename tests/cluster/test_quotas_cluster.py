"""An app's quotas across three broker processes on one real redis-server: refused at
the limit whatever pod the traffic goes through, and not before; a killed pod's tunnels
give their places back once it is reaped."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from websockets.asyncio.client import connect

from tests.support.broker import closed_with
from tests.support.cluster import LEASE, Cluster, cluster_of
from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for, scaled


def connected(cluster: Cluster, n: int) -> bool:
    return len([e for e in cluster.receiver.events if e["type"] == "tunnel.connected"]) >= n


async def refused_at_issue(cluster: Cluster, pod: int) -> bool:
    async with cluster.api(pod) as http:
        answer = await http.post("/v1/tunnels", json={"user_id": "one-more"})
    return answer.status_code == 429 and answer.json()["code"] == "tunnel_quota_exceeded"


async def test_max_tunnels_holds_across_pods_and_a_killed_pod_frees_its_places(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, limits={"max_tunnels": 4}) as cluster:
        issued = [await cluster.issue(i % 3, f"user{i}") for i in range(7)]
        # Four tunnels spread over the pods (two on pod 0): all in.
        sockets = [
            await connect(cluster.on_pod(pod, issued[i])) for i, pod in enumerate((0, 1, 2, 0))
        ]
        try:
            await check_for(10, lambda: connected(cluster, 4), what="four tunnels")
            for pod in range(3):
                assert await refused_at_issue(cluster, pod)
            # The fifth, through any pod: refused.
            for pod in (1, 2):
                async with connect(cluster.on_pod(pod, issued[4])) as fifth:
                    assert await closed_with(fifth) == (4429, "tunnel_quota")
            # A takeover through another pod is no new tunnel.
            sockets[1] = await connect(cluster.on_pod(2, issued[1]))
            # One closes: the fifth gets in, and only it.
            await sockets[2].close()
            await check_for(
                10, lambda: cluster.receiver.events_of(issued[2]["tunnel_id"], "tunnel.closed")
            )
            sockets[2] = await connect(cluster.on_pod(1, issued[4]))
            await check_for(10, lambda: connected(cluster, 5), what="the fifth")
            async with connect(cluster.on_pod(0, issued[5])) as sixth:
                assert await closed_with(sixth) == (4429, "tunnel_quota")
            async with cluster.api(1) as http:
                listed = (await http.get("/v1/tunnels")).json()["tunnels"]
            assert sorted(t["tunnel_id"] for t in listed) == sorted(
                issued[i]["tunnel_id"] for i in (0, 1, 3, 4)
            )

            # Pod 0 (tunnels 0 and 3) is killed: once reaped, their places are free.
            proc = cluster.pods[0].proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            lost = {issued[0]["tunnel_id"], issued[3]["tunnel_id"]}
            await check_for(
                LEASE * 4,
                lambda: (
                    lost
                    <= {
                        e["tunnel_id"]
                        for e in cluster.receiver.events
                        if e.get("reason") == "node_lost"
                    }
                ),
                what="pod 0's tunnels reported lost",
            )
            assert not await refused_at_issue(cluster, 2)
            sockets.append(await connect(cluster.on_pod(2, issued[5])))
            sockets.append(await connect(cluster.on_pod(1, issued[6])))
            await check_for(10, lambda: connected(cluster, 7), what="two more")
            assert await refused_at_issue(cluster, 1)
            async with cluster.api(2) as http:
                metrics = (await http.get("/metrics")).text
            assert 'tb_quota_refusals_total{app="demo",quota="tunnels"}' in metrics
        finally:
            for ws in sockets:
                ws.transport.abort()


async def test_the_message_quota_holds_across_pods_for_client_messages_and_pushes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    quota = 30
    limits = {
        "message_quota": quota,
        "message_quota_period": "day",
        "quota_warning_ratio": 0.5,
    }
    async with cluster_of(tmp_path, redis_server, limits=limits, on_events=None) as cluster:
        issued = [await cluster.issue(i, f"user{i}") for i in range(2)]
        ids = [i["tunnel_id"] for i in issued]
        sockets = [await connect(cluster.on_pod(i, issued[i])) for i in range(2)]
        try:
            await check_for(10, lambda: connected(cluster, 2), what="both tunnels")

            def relayed() -> int:
                return len([e for e in cluster.receiver.events if e["type"] == "tunnel.message"])

            pushed = 0
            apis = [cluster.api(1), cluster.api(2)]
            for i in range(quota):
                kind = i % 4
                if kind < 2:  # a client message, through pod 0 or pod 1
                    before = relayed()
                    await sockets[kind].send(f"m{i}")
                    await check_for(5, lambda b=before: relayed() > b, what=f"message {i}")
                else:  # a push, taken by pod 1 or pod 2, to the tunnel on the other pod
                    answer = await apis[kind - 2].post(
                        "/v1/messages",
                        json={"messages": [{"to": {"tunnels": [ids[3 - kind]]}, "data": f"p{i}"}]},
                    )
                    assert answer.status_code == 200, (i, answer.text)
                    pushed += 1
                    if i + 1 < quota * 0.5:
                        assert "messages" not in answer.headers.get("tb-quota-warning", "")
            for ws in sockets:  # every push arrived
                for _ in range(pushed // 2):
                    assert (await asyncio.wait_for(ws.recv(), scaled(5))).startswith("p")

            # All of the quota used: the next push, through any pod, is refused...
            for http in apis:
                answer = await http.post(
                    "/v1/messages", json={"messages": [{"to": {"all": True}, "data": "no"}]}
                )
                assert answer.status_code == 429, answer.text
                assert answer.json()["code"] == "message_quota_exceeded"

            async def warned() -> bool:
                async with cluster.api(0) as http:
                    answer = await http.get("/v1/tunnels")
                return answer.headers.get("tb-quota-warning", "").startswith(
                    f"messages; used={quota}; limit={quota}; period=day"
                )

            await check_for(5, warned, what="the warning header on pod 0")
            # ... and the next client message closes its tunnel, unrelayed.
            await sockets[1].send("beyond")
            assert await closed_with(sockets[1]) == (4429, "message_quota")
            await check_for(5, lambda: cluster.receiver.events_of(ids[1], "tunnel.closed"))
            assert relayed() == quota - pushed
        finally:
            for http in apis:
                await http.aclose()
            for ws in sockets:
                ws.transport.abort()

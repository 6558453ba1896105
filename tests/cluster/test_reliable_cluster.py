"""The reliable protocol on pods sharing Redis: a tunnel whose socket dropped is shown
``resumable`` by every pod, pushes sent through any pod while it waits are kept for it,
and its client resuming on the pod that held it gets them, in order, with no events."""

from __future__ import annotations

from pathlib import Path

from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.reliable_client import ReliableClient
from tests.support.waiting import check_for


async def test_a_dropped_tunnel_is_resumable_everywhere_and_resumes_on_its_pod(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2, on_events=None) as cluster:
        issued = await cluster.issue(1, "erin", groups=["g"])
        tunnel_id = issued["tunnel_id"]
        client = ReliableClient(cluster.on_pod(0, issued))
        await client.connect()
        await check_for(10, lambda: len(cluster.receiver.events) == 1)
        async with cluster.api(1) as http:

            async def state_is(expected: str) -> bool:
                found = (await http.get(f"/v1/tunnels/{tunnel_id}")).json()["state"]
                return bool(found == expected)

            assert await state_is("open")
            client.drop()
            await check_for(10, lambda: state_is("resumable"), what="resumable")
            for n, to in enumerate(
                ({"tunnels": [tunnel_id]}, {"users": ["erin"]}, {"groups": ["g"]})
            ):
                sent = await http.post(
                    "/v1/messages", json={"messages": [{"to": to, "data": str(n)}]}
                )
                assert sent.status_code == 200 and sent.json()["not_connected"] == [], sent.text
            welcome = await client.connect()
            assert welcome["resumed"] is True
            await client.wait_for(lambda: len(client.received) == 3)
            assert client.received == ["0", "1", "2"]
            await check_for(10, lambda: state_is("open"), what="open again")
        assert [e["type"] for e in cluster.receiver.events] == ["tunnel.connected"]
        await client.close()

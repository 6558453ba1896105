"""A pod cut off from Redis for less than a lease, while its clients come and go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import check_for


async def test_a_tunnel_closed_while_cut_off_then_taken_over_elsewhere_is_connected_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Pod 0 reports a socket closed that Redis does not hear of; its client reconnects to
    pod 1, which takes the record over as if the socket were open (a takeover sends no
    ``tunnel.connected``). The business server must still see a lifecycle: closed, then
    connected again before the new socket's messages, and one closed at its end."""
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    try:
        async with cluster_of(
            tmp_path,
            redis_server,
            pods=2,
            args=("--lease-seconds", "10"),  # the cut stays well within a lease
            redis_urls=(proxy.url(), None),
        ) as cluster:
            issued = await cluster.issue(1, "ann")
            tunnel_id = issued["tunnel_id"]

            def seen() -> list[str]:
                return [
                    e.get("data") or e["type"]
                    for e in cluster.receiver.events
                    if e["tunnel_id"] == tunnel_id
                ]

            first = await connect(cluster.on_pod(0, issued))
            await check_for(10, lambda: seen() == ["tunnel.connected"])
            proxy.cut(reject=True)

            async def pod_0_unready() -> bool:
                async with httpx.AsyncClient() as http:
                    return (await http.get(cluster.pods[0].url + "/readyz")).status_code == 503

            await check_for(10, pod_0_unready, what="pod 0 to notice it is cut off")
            await first.close()
            await check_for(10, lambda: seen() == ["tunnel.connected", "tunnel.closed"])

            async with connect(cluster.on_pod(1, issued)) as second:
                await second.send("after")
                await asyncio.sleep(0.5)
                assert seen() == ["tunnel.connected", "tunnel.closed"], "not held behind pod 0"
                proxy.restore()
                await check_for(15, lambda: "after" in seen(), what="the message after repair")
            await check_for(10, lambda: seen()[-1] == "tunnel.closed")
            assert seen() == [
                "tunnel.connected",
                "tunnel.closed",
                "tunnel.connected",
                "after",
                "tunnel.closed",
            ]
    finally:
        proxy.stop()

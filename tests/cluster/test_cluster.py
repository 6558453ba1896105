"""Three broker processes sharing one real redis-server behave as one broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import app_config
from tests.support.cluster import LEASE, cluster_of
from tests.support.receiver import WebhookReceiver
from tests.support.redis_server import RedisServer
from tests.support.servers import BrokerProcess
from tests.support.waiting import check_for


async def recv(ws: ClientConnection, seconds: float = 5) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), seconds)


async def test_push_presence_and_close_work_from_any_pod(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server) as cluster:
        alice = await cluster.issue(0, "alice", groups=["room"])
        bob = await cluster.issue(1, "bob")
        async with (
            connect(cluster.on_pod(0, alice)) as ws_a,
            connect(cluster.on_pod(1, bob)) as ws_b,
            cluster.api(2) as via_c,
        ):
            await check_for(10, lambda: len(cluster.receiver.events) == 2)
            # Named tunnels on pods 0 and 1, pushed through pod 2.
            response = await via_c.post(
                "/v1/messages",
                json={
                    "messages": [
                        {
                            "to": {"tunnels": [alice["tunnel_id"], bob["tunnel_id"], "tun_gone"]},
                            "data": "both",
                        }
                    ]
                },
            )
            assert response.json() == {"accepted": 1, "not_connected": ["tun_gone"]}
            assert await recv(ws_a) == "both"
            assert await recv(ws_b) == "both"
            # Users, groups (joined through yet another pod) and all.
            await via_c.post(
                "/v1/messages", json={"messages": [{"to": {"users": ["bob"]}, "data": "u"}]}
            )
            assert await recv(ws_b) == "u"
            async with cluster.api(0) as via_a:
                joined = await via_a.put(f"/v1/groups/room/tunnels/{bob['tunnel_id']}")
                assert joined.status_code == 200
            await via_c.post(
                "/v1/messages", json={"messages": [{"to": {"groups": ["room"]}, "data": "g"}]}
            )
            assert await recv(ws_a) == "g"
            assert await recv(ws_b) == "g"
            await via_c.post(
                "/v1/messages", json={"messages": [{"to": {"all": True}, "data": "all"}]}
            )
            assert await recv(ws_a) == "all"
            assert await recv(ws_b) == "all"
            # Presence is the same from every pod.
            views = []
            for pod in range(3):
                async with cluster.api(pod) as http:
                    group = (await http.get("/v1/groups/room/tunnels")).json()
                    one = (await http.get(f"/v1/tunnels/{alice['tunnel_id']}")).json()
                views.append((sorted(t["tunnel_id"] for t in group["tunnels"]), one["node_id"]))
            assert views[0] == views[1] == views[2]
            assert views[0] == (sorted([alice["tunnel_id"], bob["tunnel_id"]]), "pod-0")
            # Close through pod 2; the tunnel disappears from every index.
            closed = await via_c.request(
                "DELETE", f"/v1/tunnels/{bob['tunnel_id']}", json={"code": 4000, "reason": "bye"}
            )
            assert closed.json() == {"closed": True}
            with pytest.raises(ConnectionClosed) as info:
                await recv(ws_b)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4000

            async def gone() -> bool:
                for pod in range(3):
                    async with cluster.api(pod) as http:
                        if (await http.get(f"/v1/tunnels/{bob['tunnel_id']}")).status_code != 404:
                            return False
                        users = (await http.get("/v1/users/bob/tunnels")).json()["tunnels"]
                        group = (await http.get("/v1/groups/room/tunnels")).json()["tunnels"]
                        if users or bob["tunnel_id"] in {t["tunnel_id"] for t in group}:
                            return False
                return True

            await check_for(10, gone, what="closed tunnel removed everywhere")
            # Messages from a client on pod 1 still reach the webhook and come back.
            await ws_a.send("ping")
            assert await recv(ws_a) == "echo:ping"


async def test_reconnect_on_another_pod_takes_the_tunnel_over(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2) as cluster:
        issued = await cluster.issue(0, "carol")
        async with connect(cluster.on_pod(0, issued)) as old:
            await check_for(10, lambda: cluster.receiver.events)
            async with connect(cluster.on_pod(1, issued)) as new:
                with pytest.raises(ConnectionClosed) as info:
                    await recv(old)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4409
                await new.send("hi")
                assert await recv(new) == "echo:hi"
                async with cluster.api(0) as http:
                    info_json = (await http.get(f"/v1/tunnels/{issued['tunnel_id']}")).json()
                assert info_json["node_id"] == "pod-1"
        await check_for(
            10, lambda: cluster.receiver.events_of(issued["tunnel_id"], "tunnel.closed")
        )
        await asyncio.sleep(0.5)
        kinds = [e["type"] for e in cluster.receiver.events_of(issued["tunnel_id"])]
        assert kinds == ["tunnel.connected", "tunnel.message", "tunnel.closed"]


async def test_killed_pod_yields_one_closed_event_per_tunnel_within_the_lease(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server) as cluster:
        issued = [await cluster.issue(0, f"user{i}") for i in range(4)]
        sockets = [await connect(cluster.on_pod(0, i)) for i in issued]
        try:
            await check_for(10, lambda: len(cluster.receiver.events) == 4)
            proc = cluster.pods[0].proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            started = asyncio.get_running_loop().time()
            await check_for(
                LEASE * 4,
                lambda: (
                    len([e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]) == 4
                ),
                what="node_lost events",
            )
            elapsed = asyncio.get_running_loop().time() - started
            # Within the lease (plus the webhook's own delivery time).
            assert elapsed <= LEASE + 0.5
            await asyncio.sleep(LEASE)  # a second reaper must not report them again
            closed = [e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]
            assert sorted(e["tunnel_id"] for e in closed) == sorted(i["tunnel_id"] for i in issued)
            assert {e["reason"] for e in closed} == {"node_lost"}
            async with cluster.api(1) as http:
                assert (await http.get("/v1/users/user0/tunnels")).json()["tunnels"] == []
        finally:
            for ws in sockets:
                ws.transport.abort()


async def test_redis_outage_pods_keep_relaying_then_recover(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2) as cluster:
        issued = await cluster.issue(0, "dana")
        async with connect(cluster.on_pod(0, issued)) as ws:
            await check_for(10, lambda: cluster.receiver.events)
            redis_server.stop()

            async def unready() -> bool:
                async with httpx.AsyncClient() as http:
                    return (await http.get(cluster.pods[0].url + "/readyz")).status_code == 503

            await check_for(10, unready, what="unready without redis")
            # The open tunnel still talks to the business server...
            await ws.send("still here")
            assert await recv(ws) == "echo:still here"
            # ...but what needs shared state is refused clearly.
            async with cluster.api(1) as http:
                refused = await http.get("/v1/users/dana/tunnels")
            assert refused.status_code == 503
            assert refused.json()["code"] == "backend_unavailable"
            late = await cluster.issue(1, "erin")
            async with connect(cluster.on_pod(1, late)) as rejected:
                with pytest.raises(ConnectionClosed) as info:
                    await recv(rejected)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1013

            redis_server.start()  # empty: a restart without persistence

            async def repaired() -> bool:
                async with cluster.api(1) as http:
                    response = await http.get("/v1/users/dana/tunnels")
                    return response.status_code == 200 and len(response.json()["tunnels"]) == 1

            await check_for(15, repaired, what="indexes repaired after the restart")
            async with cluster.api(1) as http:
                pushed = await http.post(
                    "/v1/messages", json={"messages": [{"to": {"users": ["dana"]}, "data": "back"}]}
                )
            assert pushed.status_code == 200
            assert await recv(ws) == "back"


async def test_apps_created_with_the_cli_work_on_every_pod(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2) as cluster:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tunnel_broker",
                "apps",
                "create",
                "--id",
                "fresh",
                "--webhook-url",
                cluster.receiver.url,
                "--redis-url",
                redis_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        values = dict(line.split(" = ", 1) for line in result.stdout.strip().splitlines())
        key = values["api_key"]

        async def usable_everywhere() -> bool:
            for pod in cluster.pods:
                async with httpx.AsyncClient(
                    base_url=pod.url, headers={"authorization": f"Bearer {key}"}
                ) as http:
                    if (await http.post("/v1/tunnels", json={"user_id": "x"})).status_code != 201:
                        return False
            return True

        await check_for(10, usable_everywhere, what="new app on every pod")
        listed = subprocess.run(
            [sys.executable, "-m", "tunnel_broker", "apps", "list-redis"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "TB_REDIS_URL": redis_server.url},
        )
        assert "fresh\t" in listed.stdout and "demo\t" in listed.stdout
        rotated = subprocess.run(
            [
                sys.executable,
                "-m",
                "tunnel_broker",
                "apps",
                "rotate-key",
                "--id",
                "fresh",
                "--revoke-old",
                "--redis-url",
                redis_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        new_key = rotated.stdout.strip().split(" = ")[1]

        async def old_key_refused() -> bool:
            async with httpx.AsyncClient(base_url=cluster.pods[1].url) as http:
                old = await http.get(
                    "/v1/users/x/tunnels", headers={"authorization": f"Bearer {key}"}
                )
                new = await http.get(
                    "/v1/users/x/tunnels", headers={"authorization": f"Bearer {new_key}"}
                )
                return old.status_code == 401 and new.status_code == 200

        await check_for(10, old_key_refused, what="rotated key in force")


async def test_pod_restarting_under_the_same_id_reports_lost_tunnels_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster_of(tmp_path, redis_server, pods=2) as cluster:
        issued = [await cluster.issue(0, f"user{i}") for i in range(3)]
        sockets = [await connect(cluster.on_pod(0, i)) for i in issued]
        try:
            await check_for(10, lambda: len(cluster.receiver.events) == 3)
            first = cluster.pods[0]
            assert first.proc is not None
            os.kill(first.proc.pid, signal.SIGKILL)
            # The same node id comes back at once (a StatefulSet pod, a systemd restart).
            again = BrokerProcess(first.extra_args, env=first.env)
            cluster.pods.append(again)
            await again.start()
            await check_for(
                LEASE * 4,
                lambda: (
                    len([e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]) == 3
                ),
                what="lost tunnels reported",
            )
            await asyncio.sleep(LEASE * 2)  # neither the restarted pod nor the other repeats it
            closed = [e for e in cluster.receiver.events if e["type"] == "tunnel.closed"]
            assert sorted(e["tunnel_id"] for e in closed) == sorted(i["tunnel_id"] for i in issued)
        finally:
            for ws in sockets:
                ws.transport.abort()


async def test_wechat_sessions_are_shared_by_every_pod(
    redis_server: RedisServer, receiver: WebhookReceiver
) -> None:
    from tests.support.broker import run_broker
    from tests.support.servers import run_uvicorn
    from tunnel_broker.config import Secret
    from tunnel_broker.wechat.simulator import create_simulator_app

    sim = create_simulator_app({"wxcluster": "cluster-secret"})
    async with run_uvicorn(sim) as sim_port:
        config = app_config("demo", receiver.url, receiver.secret)
        config.update(
            wechat_appid="wxcluster",
            wechat_secret="cluster-secret",
            wechat_api_base_url=f"http://127.0.0.1:{sim_port}",
        )
        common = {"backend": "redis", "redis_url": Secret(redis_server.url), "lease_seconds": LEASE}
        async with (
            run_broker([config], node_id="a", **common) as pod_a,
            run_broker([config], node_id="b", **common) as pod_b,
            httpx.AsyncClient(base_url=pod_a.url) as client_a,
        ):
            code = sim.state.simulator.mint_login("wxcluster", user="zoe").code
            login = await client_a.get("/v1/wechat/demo/login", headers={"X-WX-Code": code})
            skey = login.json()["skey"]
            resolved = await pod_b.client("demo").http.post(
                "/v1/sessions/resolve", json={"skey": skey}
            )
            assert resolved.status_code == 200
            assert resolved.json()["openid"] == login.json()["identity"]["openid"]
            await pod_b.client("demo").http.post("/v1/sessions/revoke", json={"skey": skey})
            gone = await pod_a.client("demo").http.post("/v1/sessions/resolve", json={"skey": skey})
            assert gone.status_code == 401
            # Nothing about the session survives in Redis in a usable form.
            import redis as redis_sync

            client = redis_sync.Redis.from_url(redis_server.url)
            try:
                dump = b" ".join(client.keys("*"))
            finally:
                client.close()
            assert skey.encode() not in dump


async def test_redis_sessions_expire_and_stay_within_their_app(redis_server: RedisServer) -> None:
    import time

    import redis.asyncio as aioredis

    from tunnel_broker.backend.redis.health import RedisHealth
    from tunnel_broker.backend.redis.sessions import RedisSessionStore
    from tunnel_broker.backend.sessions import Session, skey_digest

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        health = RedisHealth()
        health.mark_healthy()
        store = RedisSessionStore(client, health)
        now = time.time()
        session = Session("a", "o", None, {"openid": "o"}, now, now + 1000, idle_seconds=100)
        skey = await store.create(session, max_per_openid=5)
        ttl = await client.ttl(f"tb:session:{skey_digest(skey)}")
        assert 0 < ttl <= 100  # idle expiry is Redis's own TTL
        assert await store.resolve(skey, app_id="another-app") is None
        assert await store.resolve(skey) is not None
        assert await store.resolve(skey, now=now + 1001) is None  # absolute lifetime
        assert await store.resolve(skey) is None  # and it is gone for good
        # Profiles for code-only logins: per app, kept for their time.
        await store.keep_profile("a", "o", {"nickName": "阿丽丝"}, seconds=100)
        assert await store.profile("a", "o") == {"nickName": "阿丽丝"}
        assert await store.profile("another-app", "o") is None
        assert 0 < await client.ttl("tb:{a}:profile:o") <= 100
    finally:
        await client.aclose()


async def test_simultaneous_connects_on_two_pods_respect_the_per_user_limit(
    redis_server: RedisServer, receiver: WebhookReceiver
) -> None:
    from tests.support.broker import run_broker
    from tunnel_broker.config import Secret

    config = app_config("tight", receiver.url, receiver.secret, max_tunnels_per_user=2)
    common = {"backend": "redis", "redis_url": Secret(redis_server.url), "lease_seconds": LEASE}
    async with (
        run_broker([config], node_id="a", **common) as pod_a,
        run_broker([config], node_id="b", **common) as pod_b,
    ):
        issued = [await pod_a.client("tight").issue("rush") for _ in range(6)]
        urls = [
            i["connect_url"].replace(pod_a.ws_url, (pod_a if n % 2 else pod_b).ws_url)
            for n, i in enumerate(issued)
        ]
        sockets = await asyncio.gather(*(connect(url) for url in urls))
        try:
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(ws.wait_closed(), 1.5) for ws in sockets),
                return_exceptions=True,
            )
            refused = [ws for ws, o in zip(sockets, outcomes, strict=True) if o is None]
            assert len(refused) == 4
            assert {ws.close_code for ws in refused} == {1008}
            assert len(pod_a.node.hub) + len(pod_b.node.hub) == 2
        finally:
            for ws in sockets:
                await ws.close()

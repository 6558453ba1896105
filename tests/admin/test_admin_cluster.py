"""The admin API on three pods sharing one Redis: a change made through any pod is in
force on every pod within a second, two operators' changes do not undo each other, and
the audit log and the pod list are the cluster's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, cluster_of
from tests.support.redis_server import RedisServer

OPERATOR_KEY = "op-key-" + "c" * 40
ARGS = ("--admin-keys", f"carol:{OPERATOR_KEY}")
PROPAGATION = 1.0  # seconds: what the issue asks of a change made on another pod

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def admin(cluster: Cluster, pod: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cluster.pods[pod].url,
        headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        timeout=10,
    )


async def create_shop(cluster: Cluster, http: httpx.AsyncClient) -> str:
    """App ``shop``, created through ``http``'s pod; its API key."""
    created = await http.post(
        "/admin/v1/apps", json={"id": "shop", "webhook_url": cluster.receiver.url}
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["api_key"]
    return key


async def status_with_key(cluster: Cluster, pod: int, key: str) -> int:
    async with httpx.AsyncClient(
        base_url=cluster.pods[pod].url, headers={"authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        return (await http.get("/v1/app")).status_code


async def seconds_until(cluster: Cluster, key: str, status: int) -> list[float]:
    """For each pod, how long until ``/v1/app`` with ``key`` answers ``status``."""
    started = time.monotonic()

    async def on(pod: int) -> float:
        while await status_with_key(cluster, pod, key) != status:
            assert time.monotonic() - started < 5 * PROPAGATION, (
                f"pod {pod} never answered {status}"
            )
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    return list(await asyncio.gather(*(on(p) for p in range(len(cluster.pods)))))


async def test_changes_through_one_pod_are_in_force_on_all_within_a_second(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        cluster_of(tmp_path, redis_server, args=ARGS) as cluster,
        admin(cluster, 0) as pod0,
        admin(cluster, 1) as pod1,
        admin(cluster, 2) as pod2,
    ):
        key = await create_shop(cluster, pod0)
        waits = await seconds_until(cluster, key, 200)
        print(f"create: in force on each pod after {[f'{w:.3f}' for w in waits]} s")
        assert max(waits) < PROPAGATION

        changed = await pod1.patch("/admin/v1/apps/shop", json={"limits": {"max_tunnels": 7}})
        assert changed.status_code == 200, changed.text

        async def limit_on(pod: int) -> int | None:
            async with httpx.AsyncClient(
                base_url=cluster.pods[pod].url, headers={"authorization": f"Bearer {key}"}
            ) as http:
                return (await http.get("/v1/app")).json()["limits"]["max_tunnels"]

        started = time.monotonic()
        while [await limit_on(p) for p in range(3)] != [7, 7, 7]:
            assert time.monotonic() - started < PROPAGATION
            await asyncio.sleep(0.02)

        rotated = await pod2.post("/admin/v1/apps/shop/api-keys", json={"overlap_seconds": 0})
        new_key = rotated.json()["api_key"]
        assert max(await seconds_until(cluster, key, 401)) < PROPAGATION
        assert max(await seconds_until(cluster, new_key, 200)) < PROPAGATION

        assert (await pod0.delete("/admin/v1/apps/shop")).status_code == 204
        waits = await seconds_until(cluster, new_key, 401)
        print(f"delete: refused on each pod after {[f'{w:.3f}' for w in waits]} s")
        assert max(waits) < PROPAGATION

        entries = (await pod1.get("/admin/v1/audit")).json()["entries"]
        assert [e["action"] for e in entries] == [
            "app.delete",
            "app.rotate_api_key",
            "app.update",
            "app.create",
        ]
        assert {e["operator"] for e in entries} == {"carol"}


async def test_concurrent_changes_through_different_pods_both_hold(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        cluster_of(tmp_path, redis_server, args=ARGS) as cluster,
        admin(cluster, 0) as pod0,
        admin(cluster, 1) as pod1,
    ):
        await create_shop(cluster, pod0)
        for round_ in range(10):
            answers = await asyncio.gather(
                pod0.patch("/admin/v1/apps/shop", json={"limits": {"max_tunnels": 100 + round_}}),
                pod1.patch(
                    "/admin/v1/apps/shop", json={"limits": {"message_quota": 1000 + round_}}
                ),
            )
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            limits = (await pod0.get("/admin/v1/apps/shop")).json()["limits"]
            assert (limits["max_tunnels"], limits["message_quota"]) == (
                100 + round_,
                1000 + round_,
            )
        # The apps file's app stays the file's, through every pod.
        refused = await pod1.patch("/admin/v1/apps/demo", json={"trace_payloads": True})
        assert refused.json()["code"] == "app_in_apps_file"


async def test_the_pod_list_is_the_clusters(tmp_path: Path, redis_server: RedisServer) -> None:
    async with cluster_of(tmp_path, redis_server, args=ARGS) as cluster:
        issued = await cluster.issue(1, "ann")
        from tests.support.broker import open_tunnel

        async with open_tunnel(cluster.on_pod(1, issued)), admin(cluster, 2) as http:
            started = time.monotonic()
            while True:
                body = (await http.get("/admin/v1/pods")).json()
                tunnels = {p["node_id"]: p["tunnels"] for p in body["pods"]}
                if tunnels == {"pod-0": 0, "pod-1": 1, "pod-2": 0}:
                    break
                assert time.monotonic() - started < 15, body
                await asyncio.sleep(0.2)
            assert all(p["ready"] for p in body["pods"])
            assert body["redis"]["topology"] == "standalone" and body["redis"]["healthy"]
        cluster.pods[0].stop()  # SIGKILL: no goodbye
        async with admin(cluster, 2) as http:
            started = time.monotonic()
            while "pod-0" in {
                p["node_id"] for p in (await http.get("/admin/v1/pods")).json()["pods"]
            }:
                assert time.monotonic() - started < 30
                await asyncio.sleep(0.5)

"""Broker pods as real processes sharing one real redis-server, with a real receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.broker import app_config, new_secret
from tests.support.receiver import Reply, WebhookReceiver, echo_messages
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import RedisCluster, RedisSentinels
from tests.support.servers import BrokerProcess, write_apps_file

LEASE = 2.0


@dataclass
class Cluster:
    pods: list[BrokerProcess]
    config: dict[str, Any]
    receiver: WebhookReceiver
    redis: RedisServer | RedisCluster | RedisSentinels

    def api(self, pod: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.pods[pod].url,
            headers={"authorization": f"Bearer {self.config['api_keys'][0]}"},
            timeout=10,
        )

    async def issue(self, pod: int, user_id: str, **body: Any) -> dict[str, Any]:
        async with self.api(pod) as http:
            response = await http.post("/v1/tunnels", json={"user_id": user_id, **body})
            assert response.status_code == 201, response.text
            result: dict[str, Any] = response.json()
            return result

    def on_pod(self, pod: int, issued: dict[str, Any]) -> str:
        """The connect URL of ``issued`` pointed at pod ``pod`` (as a load balancer would)."""
        path = issued["connect_url"].split("/v1/connect", 1)[1]
        return f"ws://127.0.0.1:{self.pods[pod].port}/v1/connect{path}"


@contextlib.asynccontextmanager
async def cluster_of(
    tmp_path: Path,
    redis_server: RedisServer | RedisCluster | RedisSentinels,
    pods: int = 3,
    limits: dict[str, Any] | None = None,
    args: tuple[str, ...] = (),
    on_events: Reply | None = echo_messages,
    redis_urls: Sequence[str | None] = (),
    app: dict[str, Any] | None = None,
) -> AsyncIterator[Cluster]:
    """``pods`` broker processes on ``redis_server`` (any topology), one app ``demo``
    with ``limits``, its webhooks to a receiver serving in this process; ``args`` go to every pod.
    ``redis_urls[i]``, when given, is the way pod i reaches Redis instead of
    ``redis_server.url`` (a proxy that can cut that one pod off). ``app``: more of the
    app's settings (``wafer``, say)."""
    receiver = WebhookReceiver(secret=new_secret(), on_events=on_events)
    config = {**app_config("demo", receiver.url, receiver.secret, **(limits or {})), **(app or {})}
    apps = write_apps_file(tmp_path / "apps.json", [config])
    processes = [
        BrokerProcess(
            [
                "--apps-file",
                str(apps),
                "--backend",
                "redis",
                *(
                    ["--redis-url", redis_urls[i]]
                    if i < len(redis_urls) and redis_urls[i]
                    else redis_server.broker_args()
                ),
                "--node-id",
                f"pod-{i}",
                "--lease-seconds",
                str(LEASE),
                "--drain-seconds",
                "0.5",
                "--log-level",
                "info",
                *args,
            ],
            env={"TB_SECRET_KEY": "cluster-test-secret-0123456789"},
        )
        for i in range(pods)
    ]
    async with receiver.serving():
        try:
            await asyncio.gather(*(p.start() for p in processes))
            yield Cluster(processes, config, receiver, redis_server)
        finally:
            for p in processes:
                p.stop()

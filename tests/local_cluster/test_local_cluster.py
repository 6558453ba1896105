"""``scripts/local_cluster.py``: Redis, three broker pods and nginx on loopback behave as
one broker behind a WebSocket-aware load balancer, and stop cleanly.

The command runs exactly as an operator runs it (a child process, stopped with Ctrl-C's
SIGINT); every request and WebSocket goes through nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import app_config, new_secret
from tests.support.receiver import WebhookReceiver, echo_messages
from tests.support.servers import write_apps_file
from tests.support.waiting import check_for, scaled

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local_cluster.py"
NGINX = "/usr/sbin/nginx"


@dataclass
class Running:
    """The started topology, as the command's ``--state-file`` describes it."""

    proc: subprocess.Popen[bytes]
    state: dict[str, Any]
    output: Path
    api_key: str

    @property
    def url(self) -> str:
        return str(self.state["url"])

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=10
        )

    def pod(self, node_id: str) -> dict[str, Any]:
        return next(p for p in self.state["pods"] if p["node_id"] == node_id)

    def read_output(self) -> str:
        return self.output.read_text(errors="replace")


def require_tools() -> None:
    """CI installs these (scripts/test.sh); a missing one is a failure, never a skip."""
    missing = [
        f"{name} ({hint})"
        for name, found, hint in (
            ("nginx", os.access(NGINX, os.X_OK), "apt-get install -y nginx"),
            ("redis-server", shutil.which("redis-server"), "apt-get install -y redis-server"),
        )
        if not found
    ]
    if missing:
        pytest.fail("not installed: " + ", ".join(missing))


def port_open(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0


@contextlib.asynccontextmanager
async def local_cluster(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[Running]:
    require_tools()
    config = app_config("demo", receiver.url, receiver.secret)
    apps = write_apps_file(tmp_path / "apps.json", [config])
    state_file = tmp_path / "state.json"
    output = tmp_path / "local_cluster.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--apps-file",
                str(apps),
                "--port",
                "0",
                "--drain-seconds",
                "0.5",
                "--state-file",
                str(state_file),
                "--work-dir",
                str(tmp_path / "run"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"local_cluster.py exited:\n{output.read_text()}")
            return state_file.exists()

        await check_for(45, started, interval=0.05, what="the local cluster to be ready")
        running = Running(proc, json.loads(state_file.read_text()), output, config["api_keys"][0])
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                proc.kill()  # the children follow it (PDEATHSIG)
                proc.wait()


async def recv(ws: ClientConnection, seconds: float = 5) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), scaled(seconds))


async def close_code(ws: ClientConnection, seconds: float = 10) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await recv(ws, seconds)
    return info.value.rcvd.code if info.value.rcvd else None


async def test_tunnels_spread_over_pods_behind_nginx_and_all_get_pushes(tmp_path: Path) -> None:
    receiver = WebhookReceiver(secret=new_secret(), on_events=echo_messages)
    async with (
        receiver.serving(),
        local_cluster(tmp_path, receiver) as cluster,
        cluster.api() as api,
        AsyncExitStack() as sockets,
    ):
        assert (await api.get("/readyz")).json() == {"status": "ready"}
        assert (await api.get("/healthz")).status_code == 200

        issued = []
        for i in range(6):
            response = await api.post("/v1/tunnels", json={"user_id": f"user-{i}"})
            assert response.status_code == 201, response.text
            issued.append(response.json())
        # Connect URLs point at the load balancer, not at the pod that minted them.
        lb = urlsplit(cluster.url)
        assert all(i["connect_url"].startswith(f"ws://{lb.netloc}/v1/connect?") for i in issued)
        clients = [await sockets.enter_async_context(connect(i["connect_url"])) for i in issued]
        ids = [i["tunnel_id"] for i in issued]
        await check_for(
            10,
            lambda: len([e for e in receiver.events if e["type"] == "tunnel.connected"]) == 6,
            what="six tunnel.connected webhooks",
        )

        # least_conn spreads the long-lived sockets over every pod.
        async def homes() -> dict[str, str] | None:
            found = {}
            for tunnel_id in ids:
                response = await api.get(f"/v1/tunnels/{tunnel_id}")
                if response.status_code != 200:
                    return None
                found[tunnel_id] = response.json()["node_id"]
            return found

        home: dict[str, str] = await check_for(10, homes, what="presence of every tunnel")
        assert set(home.values()) == {"pod-0", "pod-1", "pod-2"}

        # A push to everyone and a push naming every tunnel, each sent once through nginx.
        response = await api.post(
            "/v1/messages", json={"messages": [{"to": {"all": True}, "data": "to-all"}]}
        )
        assert response.status_code == 200, response.text
        assert [await recv(ws) for ws in clients] == ["to-all"] * 6
        response = await api.post(
            "/v1/messages", json={"messages": [{"to": {"tunnels": ids}, "data": "named"}]}
        )
        assert response.json() == {"accepted": 1, "not_connected": []}
        assert [await recv(ws) for ws in clients] == ["named"] * 6

        # Client -> pod -> webhook -> reply action -> the client's pod, for every pod.
        for n, ws in enumerate(clients):
            await ws.send(f"ping-{n}")
        assert [await recv(ws) for ws in clients] == [f"echo:ping-{n}" for n in range(6)]

        # One pod drains: its clients get 1012; nginx keeps every other call working.
        leaving = cluster.pod("pod-1")
        os.kill(leaving["pid"], signal.SIGTERM)
        on_leaving = [ws for ws, t in zip(clients, ids, strict=True) if home[t] == "pod-1"]
        staying = [ws for ws, t in zip(clients, ids, strict=True) if home[t] != "pod-1"]
        assert on_leaving and staying
        for ws in on_leaving:
            assert await close_code(ws) == 1012
        for _ in range(6):  # the draining pod answers 503: nginx asks another
            assert (await api.get("/readyz")).status_code == 200
        await check_for(15, lambda: not port_open(leaving["url"]), what="pod-1 to stop serving")
        for i in range(6):  # connection refused: nginx moves even a POST on
            response = await api.post("/v1/tunnels", json={"user_id": f"late-{i}"})
            assert response.status_code == 201, response.text
        await api.post(
            "/v1/messages", json={"messages": [{"to": {"all": True}, "data": "still-here"}]}
        )
        assert [await recv(ws) for ws in staying] == ["still-here"] * len(staying)
        # The supervisor reports the lost pod and keeps the rest running.
        await check_for(
            15, lambda: "pod-1 exited with code 0" in cluster.read_output(), what="the report"
        )
        assert cluster.proc.poll() is None

        # Ctrl-C: the remaining pods drain (1012 through nginx), then nginx and Redis stop.
        cluster.proc.send_signal(signal.SIGINT)
        for ws in staying:
            assert await close_code(ws) == 1012
        assert await asyncio.to_thread(cluster.proc.wait, scaled(30)) == 0
        assert cluster.read_output().rstrip().endswith("stopped")
        everything = [cluster.url, cluster.state["redis"]["url"]]
        everything += [p["url"] for p in cluster.state["pods"]]
        assert not [url for url in everything if port_open(url)]
        # Every tunnel that connected was reported closed exactly once.
        closed = [e["tunnel_id"] for e in receiver.events if e["type"] == "tunnel.closed"]
        assert sorted(closed) == sorted(ids)

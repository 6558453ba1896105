"""Broker CPU per echo on the legacy Wafer path against the native one (issue #12 target:
within 20%).

Both run the same round trip, the way each kind of business server does it: a client
message becomes an event at the business server, which pushes the text back through the
broker's HTTP API, and the client receives it.

- native: a WebSocket frame, a Standard Webhooks batch (signed, batched across tunnels),
  a ``POST /v1/messages`` with the API key;
- wafer: a ``message:{...}`` packet, one legacy event a request (``sha1`` signed), a
  ``POST /wafer/<app>/ws/push`` in the legacy envelope.

The broker runs alone on ``BROKER_CPU`` (memory backend); the clients and the business
server share this process on the other CPU. Modes alternate, ``--rounds`` times each, so
drift of the host hits both alike; the broker's CPU (``/proc``) is divided by the echoes
completed.

    .venv/bin/python bench/wafer_echo.py                 # 3 rounds x 2 modes x 10 s
    .venv/bin/python bench/wafer_echo.py --rounds 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from common import (
    API_KEY,
    APP_ID,
    LOAD_CPU,
    REPO_ROOT,
    free_port,
    new_webhook_secret,
    pin_to_cpu,
    raise_nofile_limit,
    start_broker,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(REPO_ROOT))

from tunnel_broker.wafer import envelope

KEY = "bench-wafer-signing-key"
# native: the business server pushes each webhook batch's replies in one API call;
# native-each: one call a message, as the legacy protocol forces (no batching either way).
MODES = ("native", "native-each", "wafer")
HOST = "biz.bench.test"


def apps_file(path: Path, business_port: int) -> Path:
    path.write_text(
        f"""[[apps]]
id = "{APP_ID}"
api_keys = ["{API_KEY}"]
webhook_url = "http://127.0.0.1:{business_port}/native"
webhook_secrets = ["{new_webhook_secret()}"]
[apps.limits]
messages_per_second = 1000
max_tunnels_per_user = 100000
api_requests_per_second = 100000
api_burst = 100000
[apps.wafer]
signing_keys = ["{KEY}"]
business_hosts = ["{HOST}"]
receive_url_origin = "http://127.0.0.1:{business_port}"
"""
    )
    return path


class BusinessServer:
    """Echoes every message back through the broker's API, native or legacy."""

    def __init__(self, broker_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=broker_url, limits=httpx.Limits(max_connections=32))
        self.tasks: set[asyncio.Task[None]] = set()
        self.push_each = False
        self.app = Starlette(
            routes=[
                Route("/native", self.native, methods=["POST"]),
                Route("/wafer", self.wafer, methods=["POST"]),
            ]
        )

    def _later(self, push: Any) -> None:
        task = asyncio.get_running_loop().create_task(push)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def native(self, request: Request) -> Response:
        events = json.loads(await request.body())["events"]
        messages = [
            {"to": {"tunnels": [e["tunnel_id"]]}, "data": e["data"]}
            for e in events
            if e["type"] == "tunnel.message"
        ]
        if messages and self.push_each:
            for message in messages:  # as a legacy server must: one call a message
                self._later(self._native_push([message]))
        elif messages:
            self._later(self._native_push(messages))
        return Response(status_code=204)

    async def _native_push(self, messages: list[dict[str, Any]]) -> None:
        headers = {"authorization": f"Bearer {API_KEY}"}
        await self.http.post("/v1/messages", json={"messages": messages}, headers=headers)

    async def wafer(self, request: Request) -> Response:
        body = json.loads(await request.body())
        data = json.loads(body["data"])
        if data["type"] == "message":
            self._later(self._wafer_push(data["tunnelId"], data["content"]))
        return JSONResponse({"code": 0, "message": "ok"})

    async def _wafer_push(self, tunnel_id: str, content: str) -> None:
        text = json.dumps([{"tunnelIds": [tunnel_id], "type": "message", "content": content}])
        body = {
            "data": text,
            "tcId": envelope.tc_id(HOST),
            "signature": envelope.sign(text, KEY),
        }
        await self.http.post(f"/wafer/{APP_ID}/ws/push", json=body)


async def open_tunnel(broker_url: str, mode: str, http: httpx.AsyncClient) -> ClientConnection:
    if mode.startswith("native"):
        answer = await http.post(
            "/v1/tunnels", json={"user_id": "u"}, headers={"authorization": f"Bearer {API_KEY}"}
        )
        url = answer.json()["connect_url"]
    else:
        data = json.dumps({"receiveUrl": f"http://{HOST}/wafer", "protocolType": "wss"})
        body = {"data": data, "tcId": envelope.tc_id(HOST), "signature": envelope.sign(data, KEY)}
        answer = (await http.post(f"/wafer/{APP_ID}/get/wsurl", json=body)).json()
        url = json.loads(answer["data"])["connectUrl"]
    return await connect(url, max_queue=None, ping_interval=None)


async def client(
    ws: ClientConnection, mode: str, rate: float, until: float, latencies: list[float]
) -> None:
    sent: dict[str, float] = {}

    async def receive() -> None:
        async for frame in ws:
            text = frame if isinstance(frame, str) else frame.decode()
            key = json.loads(text.removeprefix("message:"))["content"]
            started = sent.pop(str(key), None)
            if started is not None:
                latencies.append(time.perf_counter() - started)

    reader = asyncio.create_task(receive())
    n = 0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while loop.time() < until:
        n += 1
        key = f"{id(ws)}-{n}"
        sent[key] = time.perf_counter()
        payload = json.dumps({"type": "echo", "content": key})
        await ws.send(f"message:{payload}" if mode == "wafer" else payload)
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    await asyncio.sleep(1.0)  # the last echoes
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


def webhook_outcomes(metrics: str) -> dict[str, int]:
    """``tb_webhook_requests_total`` by outcome (both paths count there)."""
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        if line.startswith("tb_webhook_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def broker_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> int:
    pin_to_cpu(LOAD_CPU)
    raise_nofile_limit()
    business_port = free_port()
    work = Path(tempfile.mkdtemp(prefix="tb-wafer-echo-"))
    broker = start_broker(apps_file(work / "apps.toml", business_port), work)
    business = BusinessServer(broker.base_url)
    server = uvicorn.Server(
        uvicorn.Config(business.app, host="127.0.0.1", port=business_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    try:
        async with httpx.AsyncClient(base_url=broker.base_url) as http:
            for round_ in range(args.rounds):
                for mode in MODES:
                    business.push_each = mode == "native-each"
                    sockets = [
                        await open_tunnel(broker.base_url, mode, http) for _ in range(args.tunnels)
                    ]
                    await asyncio.sleep(1.0)
                    latencies: list[float] = []
                    before = broker_cpu(broker.pid)
                    until = asyncio.get_running_loop().time() + args.duration
                    rate = args.rate / args.tunnels
                    await asyncio.gather(
                        *(client(ws, mode, rate, until, latencies) for ws in sockets)
                    )
                    used = broker_cpu(broker.pid) - before
                    outcomes = webhook_outcomes((await http.get("/metrics")).text)
                    for ws in sockets:
                        await ws.close()
                    per_echo = used / max(1, len(latencies)) * 1e6
                    p99 = statistics.quantiles(latencies, n=100)[98] * 1e3 if latencies else 0.0
                    results[mode].append((per_echo, p99, len(latencies)))
                    print(
                        f"round {round_ + 1} {mode}: {len(latencies)} echoes, broker "
                        f"{per_echo:.0f} µs per echo, p99 {p99:.1f} ms; webhook requests so far "
                        f"{outcomes}",
                        flush=True,
                    )
    finally:
        server.should_exit = True
        await serving
        await business.http.aclose()
        broker.stop(5)
    print(f"\n`{' '.join(sys.argv)}`\n")
    print("| path | broker CPU per echo (runs) | median | echo p99 |")
    print("| --- | --- | --- | --- |")
    medians = {}
    for mode, runs in results.items():
        medians[mode] = statistics.median(r[0] for r in runs)
        cpu = ", ".join(f"{r[0]:.0f}" for r in runs)
        p99s = ", ".join(f"{r[1]:.1f}" for r in runs)
        print(f"| {mode} | {cpu} µs | {medians[mode]:.0f} µs | {p99s} ms |")
    for native in ("native", "native-each"):
        ratio = medians["wafer"] / medians[native] - 1
        print(f"legacy path: {ratio:+.0%} broker CPU per echo against {native}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    p.add_argument("--tunnels", type=int, default=50)
    p.add_argument("--rate", type=float, default=300.0, help="echoes per second, all tunnels")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

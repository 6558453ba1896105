"""What the reliable protocol costs, and how fast a resume catches up.

1. **Broker CPU per push**, raw frames against ``tb.reliable.v1``: ``--tunnels`` clients
   (acknowledging as the mini-program library does: every 32 pushes or 500 ms), broadcasts at
   ``--rate`` per second for ``--duration`` seconds; broker CPU (user + system, from
   /proc) divided by the pushes delivered. Alternating raw and reliable runs, ``--rounds``
   of each, so drift of the host hits both. ``--backend redis`` runs one pod on a
   ``redis-server`` of its own.
2. **Resume latency**: a reliable client drops its socket, 100 pushes are sent while it
   is away, it reconnects with ``resume``; the time from the start of the reconnect to
   the last missed push, ``--resumes`` times; p50/p99.

    .venv/bin/python bench/reliable_bench.py                        # ~2 minutes
    .venv/bin/python bench/reliable_bench.py --backend redis

Prints markdown tables for docs/performance.md. The broker is pinned to CPU 0, the load
(this process) to CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    API_KEY,
    HOST,
    LOAD_CPU,
    ApiClient,
    ManagedProcess,
    broker_metric,
    free_port,
    pin_to_cpu,
    start_broker,
    start_webhook_receiver,
    write_apps_file,
)
from durable_cost import cpu_seconds, start_redis
from websockets.asyncio.client import ClientConnection, connect

SUBPROTOCOL = "tb.reliable.v1"
ACK_EVERY, ACK_DELAY = 32, 0.5  # clients/miniprogram's defaults


class Client:
    """One tunnel's client: counts pushes; with the protocol, acknowledges them as the
    mini-program library does by default (every 32 pushes, or 500 ms after the first
    one not acknowledged)."""

    def __init__(self, ws: ClientConnection, reliable: bool) -> None:
        self.ws, self.reliable = ws, reliable
        self.received = 0
        self.last = self.acked = 0
        self.timer: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        ws = self.ws
        async for frame in ws:
            if not self.reliable:
                self.received += 1
                continue
            if isinstance(frame, str) and frame[0] == "m":
                self.received += 1
                self.last = int(frame[1 : frame.index(":")])
                if self.last - self.acked >= ACK_EVERY:
                    self._ack()
                elif self.timer is None:
                    self.timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._ack)

    def _ack(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.last > self.acked:
            self.acked = self.last
            task = asyncio.ensure_future(self.ws.send(f"a{self.last}:"))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def open_clients(api: ApiClient, port: int, count: int, reliable: bool) -> list[Client]:
    clients = []
    for n in range(count):
        issued = await api.post("/v1/tunnels", {"user_id": f"u{n}"}, expect=201)
        url = issued["connect_url"].replace(
            issued["connect_url"].split("/v1/")[0], f"ws://{HOST}:{port}"
        )
        ws = await connect(url, subprotocols=[SUBPROTOCOL] if reliable else None, max_queue=None)  # type: ignore[list-item]
        if reliable:
            await ws.recv()  # the welcome
        clients.append(Client(ws, reliable))
    return clients


async def push_cost(
    broker: ManagedProcess,
    api: ApiClient,
    args: argparse.Namespace,
    reliable: bool,
    redis_pid: int | None,
) -> dict[str, float]:
    clients = await open_clients(api, broker.port, args.tunnels, reliable)
    await asyncio.sleep(1)
    before_cpu, before_wall = broker.cpu_seconds(), time.monotonic()
    before_redis = cpu_seconds(redis_pid) if redis_pid else 0.0
    broadcasts = int(args.rate * args.duration)
    started = time.monotonic()
    for n in range(broadcasts):
        await api.post("/v1/messages", {"messages": [{"to": {"all": True}, "data": f"push {n}"}]})
        await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
    expected = broadcasts * len(clients)
    deadline = time.monotonic() + 30
    while sum(c.received for c in clients) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu = broker.cpu_seconds() - before_cpu
    redis_cpu = cpu_seconds(redis_pid) - before_redis if redis_pid else 0.0
    wall = time.monotonic() - before_wall
    delivered = sum(c.received for c in clients)
    for client in clients:
        await client.ws.close()
    await asyncio.sleep(0.5)
    left = broker_metric(broker, "tb_tunnels_open") or 0
    if left:
        print(f"  {left:.0f} tunnels still open after the run", file=sys.stderr)
    return {
        "delivered": delivered,
        "expected": expected,
        "us_per_push": cpu / max(1, delivered) * 1e6,
        "cpu_share": cpu / wall,
        "redis_us_per_push": redis_cpu / max(1, delivered) * 1e6,
    }


async def resume_latencies(
    broker: ManagedProcess, api: ApiClient, args: argparse.Namespace
) -> list[float]:
    issued = await api.post("/v1/tunnels", {"user_id": "resumer"}, expect=201)
    tunnel_id = issued["tunnel_id"]
    url = issued["connect_url"].replace(
        issued["connect_url"].split("/v1/")[0], f"ws://{HOST}:{broker.port}"
    )
    last = 0
    latencies = []
    ws = await connect(url, subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
    await ws.recv()
    for _ in range(args.resumes):
        ws.transport.abort()
        batch = [{"to": {"tunnels": [tunnel_id]}, "data": f"missed {n}"} for n in range(100)]
        await api.post("/v1/messages", {"messages": batch})
        started = time.monotonic()
        ws = await connect(f"{url}&resume={last}", subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        welcome = json.loads(str(await ws.recv())[2:])
        assert welcome["resumed"], welcome
        got = 0
        while got < 100:
            frame = str(await ws.recv())
            if frame[0] == "m":
                got += 1
                last = int(frame[1 : frame.index(":")])
        latencies.append(time.monotonic() - started)
        await ws.send(f"a{last}:")
        await asyncio.sleep(0.05)
    await ws.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    pin_to_cpu(LOAD_CPU)
    tmp = Path(tempfile.mkdtemp(prefix="tb-reliable-bench-"))
    receiver = start_webhook_receiver(tmp)
    apps = write_apps_file(
        tmp / "apps.toml",
        f"{receiver.base_url}/webhook",
        extra_limits={"resume_buffer_messages": "100000", "webhook_buffer_events": "1000000"},
    )
    extra: list[str] = []
    redis = None
    if args.backend == "redis":
        redis_port = free_port()
        redis = start_redis(redis_port, 0)
        extra = ["--backend", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
    broker = start_broker(apps, tmp, extra_args=extra)
    api = ApiClient(HOST, broker.port, API_KEY)
    try:
        rows = []
        for round_ in range(args.rounds):
            for reliable in (False, True):
                result = await push_cost(
                    broker, api, args, reliable, redis.pid if redis is not None else None
                )
                rows.append((round_ + 1, reliable, result))
                print(
                    f"round {round_ + 1} {'reliable' if reliable else 'raw':8} "
                    f"{result['us_per_push']:.1f} us/push, delivered {result['delivered']}"
                    f"/{result['expected']}, broker {result['cpu_share']:.0%} of a core",
                    file=sys.stderr,
                )
        latencies = await resume_latencies(broker, api, args)
    finally:
        await api.aclose()
        broker.stop()
        receiver.stop()
        if redis is not None:
            redis.kill()
    raw = statistics.median(r["us_per_push"] for _, rel, r in rows if not rel)
    rel = statistics.median(r["us_per_push"] for _, rel_, r in rows if rel_)
    setup = f"{args.tunnels} tunnels, {args.rate} broadcasts/s, {args.duration} s per run"
    print(f"\n{args.backend}: {setup}\n")
    print("| run | protocol | broker µs per push | Redis µs per push | pushes delivered |")
    print("| --- | --- | --- | --- | --- |")
    for round_, reliable, result in rows:
        print(
            f"| {round_} | {'reliable' if reliable else 'raw'} | {result['us_per_push']:.1f} | "
            f"{result['redis_us_per_push']:.1f} | "
            f"{int(result['delivered'])} of {int(result['expected'])} |"
        )
    print(f"| median | raw | {raw:.1f} | | |")
    print(f"| median | reliable | {rel:.1f} ({(rel / raw - 1) * 100:+.0f}%) | | |")
    ms = [v * 1000 for v in latencies]
    print(
        f"\nresume with 100 missed pushes, {len(ms)} times: p50 {percentile(ms, 0.5):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("memory", "redis"), default="memory")
    parser.add_argument("--tunnels", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="broadcasts per second")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resumes", type=int, default=100)
    asyncio.run(main(parser.parse_args()))

"""Soak: mixed load on three pods for about ten minutes; afterwards every resource must
come back to its idle baseline.

    .venv/bin/python bench/soak.py                  # about 10 minutes
    .venv/bin/python bench/soak.py --minutes 2      # a quick look

Three broker pods (Redis mode, durable events) on a real redis-server, a webhook receiver
that echoes every message, and, all at once: steady tunnels sending with echo replies,
tunnels opening and closing (churn), pushes to users, groups and everyone, group joins and
leaves, takeovers across pods, presence queries. Every loop is bounded by the run's end.

The baseline is read after a warm-up round of the same load, every tunnel closed and a
pause (so that imports, pools and lazily built caches exist); the final reading after the
load, every tunnel closed and the same pause. For each pod: RSS, open file descriptors and
asyncio tasks (``tb_asyncio_tasks``); for Redis: the number of keys. Each must end within
5% of its baseline (counts: or within two, see ``SMALL_COUNT_SLACK``). Exit status 1 if
one does not. The pause (40 s) outlasts the Redis pool's trimming (idle connections close
within 30 s, ``backend/redis/connection.py``); the open fds are also printed by what
they are connected to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import Cluster, cluster_of
from tests.support.redis_server import RedisServer

TOLERANCE = 0.05
# Counts this small move by a unit or two as pools (the idle Redis connections a pod
# keeps, keep-alive connections to the receiver) settle: bounded, not a leak.
SMALL_COUNT_SLACK = 2
LIMITS = {"messages_per_second": 100, "message_burst": 200, "max_tunnels_per_user": 50}


@dataclass
class Reading:
    rss_kib: dict[int, int]
    fds: dict[int, int]
    tasks: dict[int, int]
    redis_keys: int
    fd_kinds: dict[int, Counter[str]]

    def rows(self) -> dict[str, int]:
        rows = {"redis keys": self.redis_keys}
        for pod in sorted(self.rss_kib):
            rows[f"pod {pod} RSS (KiB)"] = self.rss_kib[pod]
            rows[f"pod {pod} open fds"] = self.fds[pod]
            rows[f"pod {pod} asyncio tasks"] = self.tasks[pod]
        return rows


@dataclass
class Load:
    cluster: Cluster
    deadline: float
    steady_tunnels: int
    rate: float
    counts: Counter[str] = field(default_factory=Counter)
    steady: list[tuple[dict[str, str], ClientConnection | None]] = field(default_factory=list)

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    async def _open(self, issued: dict[str, str], pod: int) -> ClientConnection | None:
        try:
            ws = await connect(self.cluster.on_pod(pod, issued), open_timeout=10)
        except (OSError, InvalidHandshake, TimeoutError):
            self.counts["connect failures"] += 1
            return None
        self.counts["connects"] += 1
        return ws

    async def steady_client(self, index: int) -> None:
        """One tunnel sending at ``rate``, reading its echoes; moved now and then."""
        pods = len(self.cluster.pods)
        issued = await self.cluster.issue(index % pods, f"steady-{index % 50}")
        pod = index % pods
        ws = await self._open(issued, pod)
        interval = 1.0 / self.rate
        while not self.over():
            if ws is None:
                await asyncio.sleep(1)
                pod = (pod + 1) % pods
                ws = await self._open(issued, pod)
                continue
            try:
                await ws.send(f"m{index}")
                self.counts["messages"] += 1
                with contextlib.suppress(TimeoutError):
                    while True:  # drain echoes and pushes without blocking the rate
                        await asyncio.wait_for(ws.recv(), 0.001)
                        self.counts["frames received"] += 1
            except ConnectionClosed:
                ws = None
                continue
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            if random.random() < 0.002:  # a takeover: the client reconnects elsewhere
                pod = (pod + 1) % pods
                ws = await self._open(issued, pod)
                self.counts["takeovers"] += 1
        if ws is not None:
            await ws.close()

    async def churn(self, index: int) -> None:
        """Short-lived tunnels: open, join a group, talk a little, close."""
        pods = len(self.cluster.pods)
        n = 0
        while not self.over():
            n += 1
            pod = random.randrange(pods)
            issued = await self.cluster.issue(pod, f"churn-{index}", groups=[f"g{n % 5}"])
            ws = await self._open(issued, random.randrange(pods))
            if ws is None:
                continue
            with contextlib.suppress(ConnectionClosed):
                for _ in range(3):
                    await ws.send("hello")
                    self.counts["messages"] += 1
                    await asyncio.sleep(0.1)
                async with self.cluster.api(pod) as http:
                    tunnel = issued["tunnel_id"]
                    await http.put(f"/v1/groups/extra-{index}/tunnels/{tunnel}")
                    await http.delete(f"/v1/groups/extra-{index}/tunnels/{tunnel}")
                    self.counts["group changes"] += 2
                await ws.close()
            self.counts["churned tunnels"] += 1

    async def api_traffic(self) -> None:
        """Pushes to users, groups and all; presence queries; from every pod in turn."""
        pods = len(self.cluster.pods)
        clients = [self.cluster.api(pod) for pod in range(pods)]
        try:
            tick = 0
            while not self.over():
                tick += 1
                http = clients[tick % pods]
                to: dict[str, object] = {"users": [f"steady-{tick % 50}"]}
                if tick % 10 == 0:
                    to = {"groups": [f"g{tick % 5}"]}
                if tick % 50 == 0:
                    to = {"all": True}
                response = await http.post(
                    "/v1/messages", json={"messages": [{"to": to, "data": f"push {tick}"}]}
                )
                self.counts[f"pushes {response.status_code}"] += 1
                if tick % 5 == 0:
                    listed = await http.get(f"/v1/users/steady-{tick % 50}/tunnels")
                    self.counts[f"presence {listed.status_code}"] += 1
                await asyncio.sleep(0.05)
        finally:
            for client in clients:
                await client.aclose()

    async def run(self, churners: int) -> None:
        await asyncio.gather(
            *(self.steady_client(i) for i in range(self.steady_tunnels)),
            *(self.churn(i) for i in range(churners)),
            self.api_traffic(),
        )


def _socket_peers() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port), for every TCP socket on the host."""
    peers = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                peers[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return peers


def fd_kinds(pid: int, cluster: Cluster) -> Counter[str]:
    """What a pod's open file descriptors are: which peer each socket talks to."""
    names = {cluster.redis.port: "redis", cluster.receiver.port: "business server"}
    pod_ports = {pod.port for pod in cluster.pods}
    peers = _socket_peers()
    kinds: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if not target.startswith("socket:["):
                kinds["file, pipe or event fd"] += 1
                continue
            local, remote = peers.get(target[8:-1], (0, 0))
            if remote == 0:
                kinds["listening or not TCP"] += 1
            elif local in pod_ports:
                kinds["client"] += 1
            else:
                kinds[names.get(remote, "pod" if remote in pod_ports else "other")] += 1
    return kinds


async def read(cluster: Cluster, redis: aioredis.Redis) -> Reading:
    rss, fds, tasks, kinds = {}, {}, {}, {}
    async with httpx.AsyncClient() as http:
        for i, pod in enumerate(cluster.pods):
            assert pod.proc is not None
            pid = pod.proc.pid
            status = Path(f"/proc/{pid}/status").read_text()
            rss[i] = int(
                next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]
            )
            fds[i] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
            kinds[i] = fd_kinds(pid, cluster)
            metrics = (await http.get(pod.url + "/metrics")).text
            line = next(ln for ln in metrics.splitlines() if ln.startswith("tb_asyncio_tasks "))
            tasks[i] = int(float(line.split()[1]))
    return Reading(rss, fds, tasks, int(await redis.dbsize()), kinds)


async def soak(args: argparse.Namespace) -> int:
    redis_server = RedisServer()
    redis_server.start()
    work = Path(tempfile.mkdtemp(prefix="tb-soak-"))
    try:
        async with cluster_of(work, redis_server, limits=LIMITS) as cluster:
            redis = aioredis.Redis.from_url(redis_server.url)
            try:
                warm = Load(cluster, time.monotonic() + args.warmup, args.tunnels, args.rate)
                print(f"warm-up: {args.warmup:.0f} s of the load", flush=True)
                await warm.run(args.churners)
                await asyncio.sleep(args.settle)
                baseline = await read(cluster, redis)
                seconds = args.minutes * 60
                print(f"soak: {seconds:.0f} s of mixed load", flush=True)
                load = Load(cluster, time.monotonic() + seconds, args.tunnels, args.rate)
                started = time.monotonic()
                await load.run(args.churners)
                elapsed = time.monotonic() - started
                await asyncio.sleep(args.settle)
                after = await read(cluster, redis)
            finally:
                await redis.aclose()
    finally:
        redis_server.cleanup()

    print()
    print(
        f"`{' '.join(sys.argv)}`: {elapsed:.0f} s of load; "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(load.counts.items()))
    )
    print()
    print("| resource | idle baseline | after the soak | change | within 5% |")
    print("| --- | --- | --- | --- | --- |")
    failed = False
    before_rows, after_rows = baseline.rows(), after.rows()
    for name, before in before_rows.items():
        now = after_rows[name]
        change = (now - before) / before if before else 0.0
        slack = 0 if "RSS" in name else SMALL_COUNT_SLACK
        ok = now <= before * (1 + TOLERANCE) or now - before <= slack
        failed |= not ok
        print(f"| {name} | {before:,} | {now:,} | {change:+.1%} | {'yes' if ok else '**no**'} |")
    print()
    print("Open fds by what they are, baseline -> after:")
    for pod in sorted(after.fd_kinds):
        was, kinds = baseline.fd_kinds[pod], after.fd_kinds[pod]
        changes = [f"{k} {was[k]} -> {kinds[k]}" for k in sorted(set(was) | set(kinds))]
        print(f"- pod {pod}: " + ", ".join(changes))
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=8.0, help="length of the measured load")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the baseline")
    p.add_argument("--settle", type=float, default=40.0, help="idle seconds before each reading")
    p.add_argument("--tunnels", type=int, default=150, help="steady tunnels")
    p.add_argument("--rate", type=float, default=1.0, help="messages per second per steady tunnel")
    p.add_argument("--churners", type=int, default=10, help="tasks opening and closing tunnels")
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

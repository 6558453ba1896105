"""Cluster benchmark: three broker pods sharing one redis-server, measured on loopback.

Why: in cluster mode a push to a tunnel held by another pod travels API pod -> Redis
PUBLISH -> owning pod's subscriber -> socket, and a broadcast is one PUBLISH that every pod
fans out to its own tunnels. ``broker_bench.py`` measures one pod on the memory backend; this
bench measures what the Redis hop adds, so an operator knows what running N pods costs:

* ``--latency``: N clients on pod 0; sequential single-tunnel pushes (``POST /v1/messages``
  ``{"to":{"tunnels":[id]}}``) through pod 0 (local) and through pod 1 (cross-pod), in
  alternating chunks so host noise hits both alike. Latency is from just before the POST
  until the client has the frame. Also the CPU per push of the API pod, the owning pod and
  redis-server (target: cross-pod adds <= 2 ms at p50);
* ``--broadcast-cost``: one tunnel on each pod in a group; ``--broadcast-pushes``
  sequential pushes to that group through pod 0: what one broadcast (a PUBLISH every pod
  receives) costs Redis and the pods when there is next to nothing to fan out, and its
  latency to the last pod. (In ``--fanout`` Redis's share is small next to its own
  background over the long fan-out, so it is better read here.)
* ``--fanout``: ``--tunnels-per-pod`` clients on each pod; ``--broadcasts`` pushes to
  ``{"all":true}`` and then to a group spanning every pod, all sent through pod 0;
  deliveries/s until every client has every message, and each pod's CPU per delivery.

``--topology`` picks the Redis the pods share: ``standalone`` (one ``redis-server``, the
default), ``sentinel`` (a master, a replica and three sentinels; the pods find the master
through the sentinels) or ``cluster`` (three masters with a replica each; pod-to-pod messages
use sharded pub/sub, an app's keys live on one shard, each pod's channel on whichever shard
it hashes to). Sentinel and cluster are the servers of ``tests/support/redis_topologies.py``
(every server requires a password). "Redis CPU" is the masters' CPU (summed over the
shards on a cluster, and per shard too); replicas and sentinels are reported on their own
lines, as they are not on a push's path. Redis figures also come "net of idle": minus the
background each process showed in an ``--idle-window`` just before (cron, cluster bus,
sentinel pings, the pods' leases), which the fast-failover test settings make larger than
a production setup's. A closing "summary" table has the headline numbers.

Layout: with 2 CPUs the three pods and redis-server share CPU 0 (``--pod-cpus``,
``--redis-cpu``) and the load (this process) and the webhook receiver use CPU 1
(``--load-cpu``). Wall-clock rates are therefore what ONE core running the whole cluster
achieves; the per-process CPU numbers (read from /proc) are each process's own cost.

    .venv/bin/python bench/cluster_bench.py                 # full sizes, ~1-2 minutes
    .venv/bin/python bench/cluster_bench.py --quick         # < 1 minute
    .venv/bin/python bench/cluster_bench.py --topology cluster   # 3 masters + 3 replicas
    .venv/bin/python bench/cluster_bench.py --topology sentinel  # master, replica, 3 sentinels
    .venv/bin/python bench/cluster_bench.py --latency --pushes 1000 --json out.json
    .venv/bin/python bench/cluster_bench.py --py-spy /tmp/prof   # profiles (slower numbers)

Every wait has a deadline, every loop a count; all processes are stopped on exit, Ctrl-C
and errors (they run in their own process groups so Ctrl-C reaches only this process;
the sentinel and cluster servers, started by the test helpers, do not, and a Ctrl-C stops
them too). The pods' log lines (at ``--log-level``, warning by default) are quoted at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from broker_bench import (
    Check,
    PhaseResult,
    close_raw,
    percentile,
    print_phase,
    py_spy_record,
    self_cpu_seconds,
    summarize_py_spy,
    wait_progress,
)
from common import (
    API_KEY,
    HOST,
    REPO_ROOT,
    ApiClient,
    ManagedProcess,
    NoiseMeter,
    RawWsProtocol,
    RawWsStats,
    broker_metric,
    busy_host_notes,
    free_port,
    http_get,
    new_event_loop,
    pin_to_cpu,
    raise_nofile_limit,
    start_webhook_receiver,
    wait_for_quiet_host,
    wait_until,
    write_apps_file,
)

OPEN_GAUGE = "tb_tunnels_open"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:,.]+ ")  # a log record's start
ADDRESS = re.compile(r"0x[0-9a-f]+")  # object addresses make equal messages differ
GROUP = "room"
_SHOWN: set[int] = set()
# Every process this run started, so the last-resort cleanup in main() finds them all.
_STARTED: list[ManagedProcess] = []
# Cleanups of Redis topologies started through tests/support (they stop their own servers).
_CLEANUPS: list[Callable[[], None]] = []


def show(result: PhaseResult) -> None:
    """Print a result table once (phases print as they go; ``run`` prints the rest)."""
    if id(result) not in _SHOWN:
        _SHOWN.add(id(result))
        print_phase(result)


# --------------------------------------------------------------------------- redis-server


def _redis_preexec(cpu: int) -> Callable[[], None]:
    def setup() -> None:
        pin_to_cpu(cpu)
        os.setpgid(0, 0)  # Ctrl-C must not reach it before we have read its CPU time

    return setup


def redis_ping(port: int, timeout: float = 0.5) -> bool:
    """A raw RESP PING (no client library needed to know the server is up)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(work: Path, cpu: int, binary: str) -> ManagedProcess:
    """``redis-server`` without persistence on a free loopback port, pinned to ``cpu``."""
    port = free_port()
    data_dir = work / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = work / f"redis-{port}.log"
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--protected-mode",
        "yes",
    ]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(  # fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_redis_preexec(cpu),
        )
    proc = ManagedProcess(name="redis", popen=popen, log_path=log_path, port=port)
    _STARTED.append(proc)
    if not wait_until(lambda: not proc.alive() or redis_ping(port), 15.0) or not proc.alive():
        proc.stop(5)
        raise RuntimeError(f"redis-server did not start; log:\n{proc.log_tail()}")
    return proc


def precise_cpu_seconds(proc: ManagedProcess) -> float:
    """CPU time of ``proc``'s threads from ``/proc/PID/task/*/schedstat`` (nanoseconds).

    Why not psutil here: ``cpu_times`` comes in 10 ms clock ticks, so a 250-push chunk
    costing ~100 ms would be read to +-10%; schedstat's first field is the exact run time.
    A thread that exits takes its time with it (neither pods nor redis-server end threads
    while measured); falls back to psutil when schedstat is unavailable.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{proc.pid}/task")
    except OSError:
        return proc.cpu_seconds()
    for tid in tasks:
        try:
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
    return total / 1e9 if total else proc.cpu_seconds()


# --------------------------------------------------------------------------- redis topologies

APP_KEY = "tb:{bench}:t:x"  # any key of the bench's app: all of them share the hash tag


@dataclass
class RedisSetup:
    """The Redis the pods share, whatever its topology.

    ``procs`` are every ``redis-server`` process (data nodes and sentinels); ``groups`` say
    how their CPU is reported: ``(label, indexes into procs)``, the first always the
    masters (summed: the "Redis CPU" of every table), then per shard on a cluster, then
    replicas and sentinels. ``shards`` describes each shard for the info table.
    """

    topology: str
    procs: list[ManagedProcess]
    groups: list[tuple[str, list[int]]]
    broker_args: list[str]
    cleanup: Callable[[], object]
    shards: dict[str, str] = field(default_factory=dict)
    where: str = ""  # the servers' scratch directory (sentinel, cluster)

    @property
    def ports(self) -> str:
        return ", ".join(f"{p.name.removeprefix('redis-')} {p.port}" for p in self.procs)

    def additive_groups(self) -> list[int]:
        """Groups besides the masters that add to them (replicas, sentinels), not the
        per-shard parts of the masters' sum."""
        masters = set(self.groups[0][1])
        return [
            g for g, (_, members) in enumerate(self.groups) if g and masters.isdisjoint(members)
        ]

    def stop(self) -> None:
        self.cleanup()


def pin_all_threads(pid: int, cpu: int) -> bool:
    """Pin every thread of a running process (redis-server starts its bio threads before we
    could pin it, and a thread keeps the affinity it was born with)."""
    if cpu >= (os.cpu_count() or 1):
        return False
    pinned = False
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), {cpu})
                pinned = True
    return pinned


def _wrap(instance: Any, name: str, cpu: int) -> ManagedProcess:
    """A ``redis_topologies.Instance`` as a ManagedProcess (for CPU readings), pinned."""
    popen = instance.proc
    if popen is None:
        raise RuntimeError(f"{name} is not running")
    pin_all_threads(popen.pid, cpu)
    # The test servers log to /dev/null: no log tail to show.
    return ManagedProcess(
        name=name, popen=popen, log_path=instance.dir / "none.log", port=instance.port
    )


def _topologies_module() -> Any:
    """``tests.support.redis_topologies`` (the repository root on sys.path for it)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    # By name: mypy (strict on this file) need not follow into the test helpers.
    return importlib.import_module("tests.support.redis_topologies")


def _keyslot(client: Any, key: str) -> int:
    return int(client.cluster("keyslot", key))


def start_redis_topology(args: argparse.Namespace, work: Path, npods: int) -> RedisSetup:
    """Start ``--topology``'s servers, pin them to ``--redis-cpu`` and say how to reach them."""
    cpu = args.redis_cpu
    if args.topology == "standalone":
        proc = start_redis(work, cpu, args.redis_server)
        return RedisSetup(
            "standalone",
            [proc],
            [("redis-server", [0])],
            ["--redis-url", f"redis://{HOST}:{proc.port}/0"],
            lambda: proc.stop(10),
        )
    topo = _topologies_module()
    if args.topology == "sentinel":
        sentinels = topo.RedisSentinels()
        _CLEANUPS.append(sentinels.cleanup)
        sentinels.start()
        master = sentinels.current_master()
        replica = next(n for n in sentinels.data_nodes if n is not master)
        procs = [_wrap(master, "redis-master", cpu), _wrap(replica, "redis-replica", cpu)]
        procs += [_wrap(s, f"redis-sentinel{i}", cpu) for i, s in enumerate(sentinels.sentinels)]
        n = len(sentinels.sentinels)
        roles: list[tuple[str, list[int]]] = [
            ("redis master", [0]),
            ("redis replica", [1]),
            (f"{n} sentinels (sum)", list(range(2, 2 + n))),
        ]
        return RedisSetup(
            "sentinel",
            procs,
            roles,
            sentinels.broker_args(),
            sentinels.cleanup,
            where=str(sentinels.root),
        )
    cluster = topo.RedisCluster()
    _CLEANUPS.append(cluster.cleanup)
    cluster.start()
    masters = cluster.masters()
    client = masters[0].client()
    slots: dict[int, list[list[Any]]] = {node.port: [] for node in masters}
    for address, node in client.cluster("nodes").items():
        port = int(address.rsplit(":", 1)[1])
        if port in slots:
            slots[port] = list(node["slots"])
    # shard1 is the one from slot 0 on, whatever ports the run got: the same names each run.
    masters.sort(key=lambda m: min((int(r[0]) for r in slots[m.port]), default=1 << 14))
    replicas = [node for node in cluster.nodes if node not in masters]
    # What lives where: the app's keys, each pod's channel and the broadcast channel.
    owned: dict[int, list[str]] = {node.port: [] for node in masters}
    things = {"app keys {bench}": APP_KEY, "tb:broadcast": "tb:broadcast"}
    things |= {f"tb:node:pod-{i}": f"tb:node:pod-{i}" for i in range(npods)}
    for what, key in things.items():
        owner = cluster.master_of(key)
        owned[owner.port].append(f"{what} (slot {_keyslot(client, key)})")
    procs = [_wrap(m, f"redis-shard{i + 1}", cpu) for i, m in enumerate(masters)]
    procs += [_wrap(r, f"redis-replica{i + 1}", cpu) for i, r in enumerate(replicas)]
    nm = len(masters)
    groups: list[tuple[str, list[int]]] = [(f"redis {nm} masters (sum)", list(range(nm)))]
    groups += [(f"redis shard{i + 1}", [i]) for i in range(nm)]
    groups.append((f"redis {len(replicas)} replicas (sum)", list(range(nm, len(procs)))))
    shards = {
        f"shard{i + 1}: port, slots, holds": f"{m.port}, "
        + " ".join("-".join(str(x) for x in r) for r in slots[m.port])
        + ", "
        + ("; ".join(owned[m.port]) or "none of the bench's keys/channels")
        for i, m in enumerate(masters)
    }
    return RedisSetup(
        "cluster", procs, groups, cluster.broker_args(), cluster.cleanup, shards, str(cluster.root)
    )


# --------------------------------------------------------------------------- cluster


@dataclass
class Cluster:
    """Redis (any topology) + pods + webhook receiver + one API client per pod.

    CPU readings (``cpu``, ``cpu_system``) are one list: pod 0..n-1, then one entry per
    Redis group (``names`` labels them); entry ``npods`` is always the Redis masters' sum.
    """

    redis: RedisSetup
    receiver: ManagedProcess
    pods: list[ManagedProcess]
    apis: list[ApiClient]
    startup_seconds: list[float] = field(default_factory=list)
    shutdown_seconds: list[float] = field(default_factory=list)
    # The headline numbers, filled in by the phases for the closing summary table.
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> list[ManagedProcess]:
        return [*self.pods, *self.redis.procs, self.receiver]

    @property
    def npods(self) -> int:
        return len(self.pods)

    @property
    def names(self) -> list[str]:
        return [f"pod-{i}" for i in range(self.npods)] + [g for g, _ in self.redis.groups]

    @property
    def redis_label(self) -> str:
        """What entry ``npods`` of a CPU reading is ("redis-server", "redis master", ...)."""
        return self.redis.groups[0][0]

    def cpu(self) -> list[float]:
        """CPU seconds of pod 0..n-1, then of each Redis group (one snapshot, ns resolution)."""
        redis = [precise_cpu_seconds(p) for p in self.redis.procs]
        return [precise_cpu_seconds(p) for p in self.pods] + [
            sum(redis[i] for i in members) for _, members in self.redis.groups
        ]

    def cpu_system(self) -> list[tuple[float, float]]:
        """(system, user + system) seconds per pod, then per Redis group, in clock ticks
        (psutil): coarse, but over a whole phase good enough for the kernel's share."""
        splits = [p.cpu_split() for p in [*self.pods, *self.redis.procs]]
        out = [(system, user + system) for user, system in splits[: self.npods]]
        redis = splits[self.npods :]
        for _, members in self.redis.groups:
            out.append(
                (sum(redis[i][1] for i in members), sum(redis[i][0] + redis[i][1] for i in members))
            )
        return out

    async def stop(self) -> None:
        """Stop the pods in parallel (the loop keeps running, so our clients answer their
        close frames), then redis and the receiver. Idempotent."""
        for api in self.apis:
            await api.aclose()
        if not self.shutdown_seconds:
            self.shutdown_seconds = list(
                await asyncio.gather(*(asyncio.to_thread(p.stop, 60.0) for p in self.pods))
            )
        self.redis.stop()
        self.receiver.stop(5)


def _pod_preexec(cpu: int) -> Callable[[], None]:
    def setup() -> None:
        pin_to_cpu(cpu)
        raise_nofile_limit()
        os.setpgid(0, 0)  # own group: Ctrl-C reaches only the bench, which stops the pods

    return setup


def start_pod(
    args: argparse.Namespace,
    work: Path,
    apps: Path,
    redis_args: list[str],
    secret: str,
    index: int,
    cpu: int,
) -> ManagedProcess:
    """``python -m tunnel_broker serve --backend redis`` as ``pod-<index>``, pinned to ``cpu``,
    with the cluster's shared ``TB_SECRET_KEY`` and ``redis_args`` (the topology's flags:
    ``--redis-url`` and friends); returns once /healthz and /readyz answer.

    Not ``common.start_broker``: that one hard-codes the memory backend and a random
    ``--secret-key`` per broker (pods must share one key so any pod accepts any token).
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tunnel_broker",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--public-url",
        f"http://{HOST}:{port}",
        "--apps-file",
        str(apps),
        "--backend",
        "redis",
        *redis_args,
        "--node-id",
        f"pod-{index}",
        "--log-level",
        args.log_level,
        "--drain-seconds",
        "0",
        "--shutdown-flush-seconds",
        "5",
        *args.broker_arg,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TB_SECRET_KEY": secret}
    log_path = work / f"pod-{index}-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(  # fixed argv, no shell
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_pod_preexec(cpu),
        )
    pod = ManagedProcess(name=f"pod-{index}", popen=popen, log_path=log_path, port=port)
    _STARTED.append(pod)

    def ready() -> bool:
        return not pod.alive() or http_get(f"{pod.base_url}/readyz", timeout=1.0)[0] == 200

    if not wait_until(ready, 30.0, 0.1) or not pod.alive():
        pod.stop(5)
        code = pod.popen.returncode
        why = f"exited with {code}" if code is not None else "not ready in 30s"
        raise RuntimeError(f"pod-{index} {why}; log tail:\n{pod.log_tail()}")
    return pod


@contextlib.asynccontextmanager
async def cluster_env(args: argparse.Namespace, work: Path) -> AsyncIterator[Cluster]:
    receiver = start_webhook_receiver(work, cpu=args.load_cpu)
    _STARTED.append(receiver)
    cluster: Cluster | None = None
    try:
        redis = await asyncio.to_thread(start_redis_topology, args, work, args.pods)
        limits = {
            # The API budget is per pod; opening thousands of tunnels must not meet a 429.
            "api_requests_per_second": "1000000",
            "api_burst": "1000000",
            **dict(item.split("=", 1) for item in args.app_limit),
        }
        apps = write_apps_file(
            work / "apps.toml", f"{receiver.base_url}/webhook", extra_limits=limits
        )
        apps.chmod(0o600)  # it holds the API key; the pods warn about a readable one
        # Hex, not token_urlsafe: a value starting with "-" would read as an option.
        secret = secrets.token_hex(32)
        cpus = [int(c) for c in args.pod_cpus.split(",")]
        pods: list[ManagedProcess] = []
        startup: list[float] = []
        for i in range(args.pods):
            t0 = time.monotonic()
            pod = await asyncio.to_thread(
                start_pod, args, work, apps, redis.broker_args, secret, i, cpus[i % len(cpus)]
            )
            pods.append(pod)
            startup.append(time.monotonic() - t0)
        apis = [ApiClient(HOST, p.port, API_KEY, max_connections=64) for p in pods]
        cluster = Cluster(redis, receiver, pods, apis, startup_seconds=startup)
        yield cluster
    finally:
        if cluster is not None:
            await cluster.stop()
        for proc in reversed(_STARTED):
            await asyncio.to_thread(proc.stop, 10.0)
        await asyncio.to_thread(run_cleanups)


def run_cleanups() -> None:
    """Stop the Redis topologies started through tests/support (after the pods)."""
    while _CLEANUPS:
        cleanup = _CLEANUPS.pop()
        try:
            cleanup()
        except Exception:  # the others must still run
            traceback.print_exc()


# --------------------------------------------------------------------------- clients


@dataclass
class TimedStats(RawWsStats):
    """RawWsStats plus the arrival time of the latest data frame and a waiter to wake."""

    arrival: float = 0.0
    waiter: asyncio.Future[None] | None = None


class TimedWsProtocol(RawWsProtocol):
    """RawWsProtocol that stamps each data frame's arrival (before parsing) and wakes the
    pusher waiting for it, so a sequential push loop measures without polling."""

    def __init__(self, host_header: str, target: str, stats: TimedStats) -> None:
        super().__init__(host_header, target, stats)
        self.timed = stats

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        stats = self.timed
        before = stats.received
        super().data_received(data)
        if stats.received != before:
            stats.arrival = now
            waiter = stats.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


async def ws_open(
    url: str,
    stats: RawWsStats,
    timed: bool = False,
    timeout: float = 10.0,
) -> RawWsProtocol:
    """Like ``common.raw_ws_connect`` but can build a :class:`TimedWsProtocol`."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    proto: RawWsProtocol | None = None

    def factory() -> RawWsProtocol:
        nonlocal proto
        if timed:
            assert isinstance(stats, TimedStats)
            proto = TimedWsProtocol(parts.netloc, target, stats)
        else:
            proto = RawWsProtocol(parts.netloc, target, stats)
        return proto

    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().create_connection(
                factory, parts.hostname or HOST, parts.port or 80
            )
            assert proto is not None
            await proto.opened
    except BaseException:
        if proto is not None:
            proto.abort()  # do not leave a half-open socket behind
        raise
    return proto


def on_pod(connect_url: str, pod: ManagedProcess) -> str:
    """The connect URL pointed at ``pod`` (as a load balancer would route it)."""
    path = connect_url.split("/v1/connect", 1)[1]
    return f"ws://{HOST}:{pod.port}/v1/connect{path}"


@dataclass
class Opened:
    clients: list[RawWsProtocol] = field(default_factory=list)
    tunnel_ids: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # which of 0..n-1 made it
    errors: list[str] = field(default_factory=list)


async def open_on_pod(
    cluster: Cluster,
    pod: int,
    n: int,
    prefix: str,
    stats_for: Callable[[int], RawWsStats],
    groups_for: Callable[[int], list[str]],
    concurrency: int,
    timeout: float,
    timed: bool = False,
) -> Opened:
    """Create (through ``pod``'s API) and connect (to ``pod``) ``n`` tunnels, one user each."""
    out = Opened()
    next_index = 0
    max_errors = max(10, n // 100)
    api, target = cluster.apis[pod], cluster.pods[pod]

    async def worker() -> None:
        nonlocal next_index
        while next_index < n and len(out.errors) < max_errors:
            i = next_index
            next_index += 1
            try:
                body: dict[str, Any] = {"user_id": f"{prefix}{i}"}
                groups = groups_for(i)
                if groups:
                    body["groups"] = groups
                doc = await api.post("/v1/tunnels", body, expect=201)
                url = on_pod(str(doc["connect_url"]), target)
                out.clients.append(await ws_open(url, stats_for(i), timed=timed))
                out.tunnel_ids.append(str(doc["tunnel_id"]))
                out.indexes.append(i)
            except Exception as exc:  # count and carry on; too many stops the loop
                out.errors.append(f"{type(exc).__name__}: {exc}")

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, n)))))
    except TimeoutError:
        out.errors.append(f"timed out after {timeout}s with {len(out.clients)}/{n} open")
    return out


async def pods_open(cluster: Cluster) -> list[float]:
    """Every pod's own ``tb_tunnels_open`` (its local tunnels); 0 if unreadable."""
    counts: list[float] = []
    for pod in cluster.pods:
        value: float | None = await asyncio.to_thread(broker_metric, pod, OPEN_GAUGE)
        counts.append(value or 0.0)
    return counts


async def wait_pods_open(
    cluster: Cluster, want: Callable[[list[float]], bool], timeout: float
) -> list[float]:
    """Poll every pod's ``tb_tunnels_open`` until ``want(counts)`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    counts = await pods_open(cluster)
    while not want(counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        counts = await pods_open(cluster)
    return counts


async def idle_rates(cluster: Cluster, window: float) -> list[float]:
    """Each ``Cluster.cpu`` entry's CPU use while nothing is sent, in cores: the background
    (leases, pings, cron, cluster bus) that every later reading also contains."""
    before, t0 = cluster.cpu(), time.perf_counter()
    await asyncio.sleep(max(0.1, window))
    wall = time.perf_counter() - t0
    return [(b - a) / wall for a, b in zip(before, cluster.cpu(), strict=True)]


async def quiet(args: argparse.Namespace, what: str, max_wait: float | None = None) -> float:
    wait = args.wait_quiet if max_wait is None else min(max_wait, args.wait_quiet)
    if wait <= 0:
        return float("nan")
    busy = await asyncio.to_thread(wait_for_quiet_host, wait)
    if busy >= 0.15:
        print(f"warning: host still busy ({busy:.2f} cores) before {what}; numbers noisy")
    return busy


@contextlib.contextmanager
def profiles(
    args: argparse.Namespace, cluster: Cluster, name: str, pods: list[int]
) -> Iterator[list[Path]]:
    """py-spy on the given pods for the ``with`` block (``--py-spy DIR`` only)."""
    with contextlib.ExitStack() as stack:
        paths: list[Path] = []
        if args.py_spy:
            for i in pods:
                path = Path(args.py_spy) / f"{name}-pod{i}.txt"
                paths.append(path)
                stack.enter_context(py_spy_record(cluster.pods[i].pid, path, args.load_cpu))
        yield paths


def _ms(values: list[float]) -> list[float]:
    return sorted(v * 1e3 for v in values)


# --------------------------------------------------------------------------- phase: latency


@dataclass
class PushOutcome:
    latency: float | None  # seconds, None if the frame never came
    post: float  # seconds until the POST was answered
    error: str | None = None


async def push_once(
    api: ApiClient, tunnel_id: str, data: str, stats: TimedStats, timeout: float
) -> PushOutcome:
    """One push, measured from just before the POST to the frame's arrival."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    stats.waiter = waiter
    before, before_bytes = stats.received, stats.received_bytes
    body = {"messages": [{"to": {"tunnels": [tunnel_id]}, "data": data}]}
    t0 = time.perf_counter()
    try:
        status, doc = await api.request("POST", "/v1/messages", body)
        post = time.perf_counter() - t0
        if status != 200 or not isinstance(doc, dict) or doc.get("not_connected"):
            return PushOutcome(None, post, f"POST -> {status}: {str(doc)[:200]}")
        if stats.received == before:
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                return PushOutcome(None, post, "frame not received in time")
    finally:
        stats.waiter = None
    got, got_bytes = stats.received - before, stats.received_bytes - before_bytes
    if got != 1 or got_bytes != len(data):
        return PushOutcome(None, post, f"expected 1 frame of {len(data)} B, got {got}/{got_bytes}")
    return PushOutcome(stats.arrival - t0, post)


async def phase_latency(args: argparse.Namespace, cluster: Cluster) -> list[PhaseResult]:
    """Sequential pushes to tunnels of pod 0 through pod 0 (local) and pod 1 (cross-pod)."""
    n, total, chunk = args.latency_tunnels, args.pushes, max(1, args.chunk)
    res = PhaseResult(
        f"push latency: {total:,} local (API pod-0) vs {total:,} cross-pod (API pod-1) "
        f"pushes to {n} tunnels on pod-0"
    )
    res.key = "latency"
    stats = TimedStats()
    opened = await open_on_pod(
        cluster,
        0,
        n,
        "lat",
        lambda _i: stats,
        lambda _i: [],
        args.connect_concurrency,
        args.phase_timeout,
        timed=True,
    )
    try:
        if opened.errors:
            res.notes.append(f"{len(opened.errors)} open errors, first: {opened.errors[0]}")
        if not opened.clients:
            res.error = "no tunnel opened"
            return [res]
        counts = await wait_pods_open(cluster, lambda c: c[0] >= len(opened.clients), 30)
        # Separate keep-alive connections: the pushes must not queue behind one another.
        apis = {
            "local": ApiClient(HOST, cluster.pods[0].port, API_KEY, max_connections=1),
            "cross": ApiClient(HOST, cluster.pods[1].port, API_KEY, max_connections=1),
        }
        ids = opened.tunnel_ids
        pad = "p" * max(0, args.payload_bytes - 12)
        lat: dict[str, list[float]] = {"local": [], "cross": []}
        post: dict[str, list[float]] = {"local": [], "cross": []}
        # CPU deltas per mode: pods 0..n-1 then each redis group (Cluster.names).
        width = len(cluster.names)
        cpu: dict[str, list[float]] = {m: [0.0] * width for m in lat}
        kernel: dict[str, list[list[float]]] = {m: [[0.0, 0.0] for _ in range(width)] for m in lat}
        mode_wall: dict[str, float] = dict.fromkeys(lat, 0.0)
        errors: list[str] = []
        seq = 0
        try:
            # Warm-up: keep-alive connections, the subscriber path, lazy imports.
            for i in range(args.latency_warmup):
                for mode in ("local", "cross"):
                    seq += 1
                    out = await push_once(
                        apis[mode], ids[i % len(ids)], f"{seq:012d}{pad}", stats, 2.0
                    )
                    if out.error:
                        errors.append(f"warm-up {mode}: {out.error}")
                if len(errors) > 10:
                    break
            await quiet(args, "latency", 20)
            idle = await idle_rates(cluster, args.idle_window)
            noise = NoiseMeter(cluster.measured)
            noise.start()
            self0 = self_cpu_seconds()
            t_start = time.perf_counter()
            deadline = time.monotonic() + args.phase_timeout
            with profiles(args, cluster, "latency", [0, 1]) as prof:
                for c in range((total + chunk - 1) // chunk):
                    size = min(chunk, total - c * chunk)
                    # Alternate which mode goes first so slow drifts hit both the same.
                    order = ("local", "cross") if c % 2 == 0 else ("cross", "local")
                    for mode in order:
                        before, before_sys = cluster.cpu(), cluster.cpu_system()
                        t_mode = time.perf_counter()
                        for j in range(size):
                            seq += 1
                            tid = ids[(c * chunk + j) % len(ids)]
                            out = await push_once(
                                apis[mode], tid, f"{seq:012d}{pad}", stats, args.push_timeout
                            )
                            post[mode].append(out.post)
                            if out.latency is not None:
                                lat[mode].append(out.latency)
                            if out.error:
                                errors.append(f"{mode}: {out.error}")
                            if len(errors) > 20:
                                break
                        mode_wall[mode] += time.perf_counter() - t_mode
                        after, after_sys = cluster.cpu(), cluster.cpu_system()
                        for k, (a, b) in enumerate(zip(before, after, strict=True)):
                            cpu[mode][k] += b - a
                            kernel[mode][k][0] += after_sys[k][0] - before_sys[k][0]
                            kernel[mode][k][1] += after_sys[k][1] - before_sys[k][1]
                    if len(errors) > 20 or time.monotonic() > deadline:
                        res.notes.append("stopped early: too many errors or --phase-timeout")
                        break
            wall = time.perf_counter() - t_start
            client_util = (self_cpu_seconds() - self0) / wall if wall > 0 else 0.0
            other = noise.stop()
        finally:
            for api in apis.values():
                await api.aclose()
    finally:
        await close_raw(opened.clients, 5)
    await wait_pods_open(cluster, lambda c: c[0] <= 0, 15)

    local, cross = _ms(lat["local"]), _ms(lat["cross"])
    p50_delta = percentile(cross, 50) - percentile(local, 50)
    n_local, n_cross = len(local), len(cross)
    res.checks += [
        Check("cross-pod p50 - local p50", p50_delta, args.target_delta_ms, "ms"),
        Check("local pushes delivered", n_local, total, "msgs", higher_is_better=True),
        Check("cross-pod pushes delivered", n_cross, total, "msgs", higher_is_better=True),
    ]
    d = res.details
    d["tunnels on pod-0 (broker-reported)"] = f"{len(opened.clients)} ({counts[0]:.0f})"
    d["payload bytes"] = args.payload_bytes
    d["warm-up pushes per mode"] = args.latency_warmup
    for mode, values in (("local", local), ("cross-pod", cross)):
        for q in (50, 90, 99):
            d[f"{mode} latency p{q} (ms)"] = percentile(values, q)
        d[f"{mode} latency max (ms)"] = values[-1] if values else float("nan")
    d["cross-pod p90 - local p90 (ms)"] = percentile(cross, 90) - percentile(local, 90)
    d["cross-pod p99 - local p99 (ms)"] = percentile(cross, 99) - percentile(local, 99)
    d["local POST answered p50 (ms)"] = percentile(_ms(post["local"]), 50)
    d["cross-pod POST answered p50 (ms)"] = percentile(_ms(post["cross"]), 50)
    names = cluster.names
    npods = cluster.npods
    roles = {0: "owning pod", 1: "API pod"}
    for mode, count in (("local", n_local), ("cross", n_cross)):
        label = "local" if mode == "local" else "cross-pod"
        for k, name in enumerate(names):
            role = roles.get(k, "uninvolved" if k < npods else "")
            if mode == "local" and k == 0:
                role = "owning + API pod"
            tag = f"{name} ({role})" if role else name
            per = cpu[mode][k] / count * 1e6 if count else float("nan")
            d[f"{label}: CPU per push, {tag} (us)"] = per
        # "redis" = the masters (entry npods); replicas and sentinels on the next line.
        total_cpu = sum(cpu[mode][: npods + 1])
        d[f"{label}: CPU per push, all pods + redis (us)"] = (
            total_cpu / count * 1e6 if count else float("nan")
        )
        extra = cluster.redis.additive_groups()
        if extra:
            every = total_cpu + sum(cpu[mode][npods + g] for g in extra)
            d[f"{label}: CPU per push, all pods + every redis process (us)"] = (
                every / count * 1e6 if count else float("nan")
            )
        # Redis's background (cron, cluster bus, replication and sentinel pings, the pods'
        # leases) taken out, from the idle reading before the phase.
        for k, name in enumerate(names[npods:], start=npods):
            net = cpu[mode][k] - idle[k] * mode_wall[mode]
            d[f"{label}: {name} CPU per push, net of idle (us)"] = (
                net / count * 1e6 if count else float("nan")
            )
        d[f"{label}: pushes per second (sequential, one at a time)"] = (
            count / mode_wall[mode] if mode_wall[mode] > 0 else float("nan")
        )
    for mode, label in (("local", "local"), ("cross", "cross-pod")):
        shares = [f"{100 * ks / kt:.0f}%" if kt > 0.05 else "-" for ks, kt in kernel[mode]]
        d[f"{label}: kernel share of CPU, {'/'.join(names)}"] = " / ".join(shares)
    for k, name in enumerate(names):
        d[f"idle CPU before, {name} (% of a core)"] = 100 * idle[k]
    d["client process CPU utilisation (%)"] = 100 * client_util
    d["other processes' CPU on the host (cores)"] = other
    sm = cluster.summary
    sm["local push p50 / p99 (ms)"] = f"{percentile(local, 50):.2f} / {percentile(local, 99):.2f}"
    sm["cross-pod push p50 / p99 (ms)"] = (
        f"{percentile(cross, 50):.2f} / {percentile(cross, 99):.2f}"
    )
    if n_cross:
        sm["cross-pod: pods' CPU per push, sum (us)"] = sum(cpu["cross"][:npods]) / n_cross * 1e6
        sm["cross-pod: API pod / owning pod CPU per push (us)"] = (
            f"{cpu['cross'][1] / n_cross * 1e6:.0f} / {cpu['cross'][0] / n_cross * 1e6:.0f}"
        )
        for k, name in enumerate(names[npods:], start=npods):
            sm[f"cross-pod: {name} CPU per push (us)"] = cpu["cross"][k] / n_cross * 1e6
            net = (cpu["cross"][k] - idle[k] * mode_wall["cross"]) / n_cross * 1e6
            sm[f"cross-pod: {name} CPU per push, net of idle (us)"] = net
            if k == npods:
                sm["cross-pod pushes/s one Redis core routes (1e6 / net us)"] = (
                    1e6 / net if net > 0 else float("nan")
                )
    sm["latency phase: other processes' CPU (cores)"] = other
    if errors:
        res.notes.append(f"{len(errors)} push errors, first: {errors[0]}")
    res.notes += busy_host_notes(other)
    res.notes.append(
        "CPU per push includes each process's idle background (leases, pings); see the idle "
        "line, and the uninvolved pod, for its size"
    )
    for path in prof:
        res.notes += summarize_py_spy(path)
    show(res)
    return [res]


# --------------------------------------------------------------------------- phase: broadcast cost

PROBE = "probe"


async def broadcast_once(
    api: ApiClient, body: dict[str, Any], stats: list[TimedStats], timeout: float
) -> PushOutcome:
    """One push to a group with one tunnel on every pod: from before the POST until the
    last pod's tunnel has its frame."""
    loop = asyncio.get_running_loop()
    before = [s.received for s in stats]
    for s in stats:
        s.waiter = loop.create_future()
    t0 = time.perf_counter()
    try:
        status, doc = await api.request("POST", "/v1/messages", body)
        post = time.perf_counter() - t0
        if status != 200:
            return PushOutcome(None, post, f"POST -> {status}: {str(doc)[:200]}")
        pending = [
            s.waiter for s, b in zip(stats, before, strict=True) if s.received == b and s.waiter
        ]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
            except TimeoutError:
                return PushOutcome(None, post, "not every pod's tunnel had it in time")
    finally:
        for s in stats:
            s.waiter = None
    got = [s.received - b for s, b in zip(stats, before, strict=True)]
    if any(g != 1 for g in got):
        return PushOutcome(None, post, f"expected one frame per pod, got {got}")
    return PushOutcome(max(s.arrival for s in stats) - t0, post)


async def phase_broadcast_cost(args: argparse.Namespace, cluster: Cluster) -> list[PhaseResult]:
    """Sequential pushes to a group of one tunnel per pod, through pod 0: what one
    broadcast (one PUBLISH that every pod receives) costs Redis, with next to no fan-out
    work, so that Redis's share is not lost in the pods' background as in ``--fanout``."""
    npods, total = cluster.npods, args.broadcast_pushes
    res = PhaseResult(
        f"broadcast cost: {total:,} sequential group pushes through pod-0 to one tunnel on "
        f"each of {npods} pods"
    )
    res.key = "broadcast_cost"
    stats = [TimedStats() for _ in range(npods)]
    opened = await asyncio.gather(
        *(
            open_on_pod(
                cluster,
                p,
                1,
                f"bc{p}u",
                lambda _i, p=p: stats[p],  # type: ignore[misc]
                lambda _i: [PROBE],
                1,
                args.phase_timeout,
                timed=True,
            )
            for p in range(npods)
        )
    )
    clients = [c for o in opened for c in o.clients]
    lat: list[float] = []
    post: list[float] = []
    errors: list[str] = []
    try:
        if len(clients) < npods:
            first = next((e for o in opened for e in o.errors), "?")
            res.error = f"opened {len(clients)} of {npods} probe tunnels, first error: {first}"
            return [res]
        await wait_pods_open(cluster, lambda c: all(x >= 1 for x in c), 30)
        api = ApiClient(HOST, cluster.pods[0].port, API_KEY, max_connections=1)
        pad = "p" * max(0, args.payload_bytes - 12)

        def body(seq: int) -> dict[str, Any]:
            return {"messages": [{"to": {"groups": [PROBE]}, "data": f"{seq:012d}{pad}"}]}

        try:
            for seq in range(args.latency_warmup):
                out = await broadcast_once(api, body(seq), stats, 2.0)
                if out.error:
                    errors.append(f"warm-up: {out.error}")
                if len(errors) > 10:
                    break
            await quiet(args, "broadcast cost", 20)
            idle = await idle_rates(cluster, args.idle_window)
            noise = NoiseMeter(cluster.measured)
            noise.start()
            cpu0, t0 = cluster.cpu(), time.perf_counter()
            deadline = time.monotonic() + args.phase_timeout
            with profiles(args, cluster, "broadcast-cost", [0, 1]) as prof:
                for i in range(total):
                    out = await broadcast_once(
                        api, body(args.latency_warmup + i), stats, args.push_timeout
                    )
                    post.append(out.post)
                    if out.latency is not None:
                        lat.append(out.latency)
                    if out.error:
                        errors.append(out.error)
                    if len(errors) > 20 or time.monotonic() > deadline:
                        res.notes.append("stopped early: too many errors or --phase-timeout")
                        break
            cpu1, wall = cluster.cpu(), time.perf_counter() - t0
            other = noise.stop()
        finally:
            await api.aclose()
    finally:
        await close_raw(clients, 5)
    await wait_pods_open(cluster, lambda c: all(x <= 0 for x in c), 15)

    n = len(lat)
    values = _ms(lat)
    res.checks.append(Check("broadcasts delivered to every pod", n, total, "msgs", True))
    d = res.details
    for q in (50, 90, 99):
        d[f"POST -> last pod's frame p{q} (ms)"] = percentile(values, q)
    d["POST -> last pod's frame max (ms)"] = values[-1] if values else float("nan")
    d["POST answered p50 (ms)"] = percentile(_ms(post), 50)
    d["broadcasts per second (sequential, one at a time)"] = n / wall if wall > 0 else 0.0
    names = cluster.names
    used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    for k, name in enumerate(names):
        role = " (API pod)" if k == 0 else " (receiving pod)" if k < npods else ""
        d[f"CPU per broadcast, {name}{role} (us)"] = used[k] / n * 1e6 if n else float("nan")
    nets = [used[k] - idle[k] * wall for k in range(len(names))]
    for k, name in enumerate(names[npods:], start=npods):
        d[f"CPU per broadcast, {name}, net of idle (us)"] = nets[k] / n * 1e6 if n else float("nan")
    for k, name in enumerate(names):
        d[f"idle CPU before, {name} (% of a core)"] = 100 * idle[k]
    d["other processes' CPU on the host (cores)"] = other
    if errors:
        res.notes.append(f"{len(errors)} errors, first: {errors[0]}")
    res.notes += busy_host_notes(other)
    for path in prof:
        res.notes += summarize_py_spy(path)
    sm = cluster.summary
    sm["group push to 1 tunnel on each pod p50 / p99 (ms)"] = (
        f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}"
    )
    if n:
        sm["broadcast: pods' CPU per broadcast, sum (us)"] = sum(used[:npods]) / n * 1e6
        for k, name in enumerate(names[npods:], start=npods):
            sm[f"broadcast: {name} CPU per broadcast, net of idle (us)"] = nets[k] / n * 1e6
        net = nets[npods] / n * 1e6
        sm["broadcasts/s one Redis core routes (1e6 / net us)"] = (
            1e6 / net if net > 0 else float("nan")
        )
    sm["broadcast-cost phase: other processes' CPU (cores)"] = other
    show(res)
    return [res]


# --------------------------------------------------------------------------- phase: fan-out


async def broadcast_round(
    args: argparse.Namespace,
    cluster: Cluster,
    kind: str,
    stats: dict[tuple[int, bool], RawWsStats],
    members: list[int],
    everyone: list[int],
) -> PhaseResult:
    """``--broadcasts`` POSTs to ``all`` or to the group through pod 0, drained to the end."""
    k = args.broadcasts
    npods = len(cluster.pods)
    to: dict[str, Any] = {"all": True} if kind == "all" else {"groups": [GROUP]}
    expect_per_pod = everyone if kind == "all" else members
    expected = sum(expect_per_pod) * k
    res = PhaseResult(
        f"fan-out via redis: {k} x {json.dumps({'to': to}, separators=(',', ':'))} through "
        f"pod-0, {sum(expect_per_pod):,} recipients on {npods} pods"
    )
    res.key = f"fanout_{kind}"
    for s in stats.values():
        s.received = 0
        s.received_bytes = 0
        s.last_received = 0.0
    payload = "b" * args.broadcast_bytes
    post_ms: list[float] = []
    await quiet(args, f"fan-out {kind}", 20)
    idle = await idle_rates(cluster, args.idle_window)
    cpu0, t_cpu0 = cluster.cpu(), time.perf_counter()
    self0 = self_cpu_seconds()
    noise = NoiseMeter(cluster.measured)
    noise.start()

    def received() -> int:
        return sum(s.received for s in stats.values())

    with profiles(args, cluster, f"fanout-{kind}", list(range(npods))) as prof:
        t0 = time.perf_counter()
        for i in range(k):
            body = {"messages": [{"to": to, "data": f"{i}:{payload}"}]}
            p0 = time.perf_counter()
            status, doc = await cluster.apis[0].request("POST", "/v1/messages", body)
            post_ms.append((time.perf_counter() - p0) * 1e3)
            if status != 200:
                res.error = f"POST /v1/messages -> {status}: {str(doc)[:200]}"
                break
        t_posted = time.perf_counter()
        await wait_progress(received, expected, args.drain_timeout, args.phase_timeout)
    cpu1, window = cluster.cpu(), time.perf_counter() - t_cpu0
    self1 = self_cpu_seconds()
    other = noise.stop()
    got = received()
    last = max((s.last_received for s in stats.values()), default=0.0)
    wall = (last if got else time.perf_counter()) - t0
    pods_cpu = sum(cpu1[i] - cpu0[i] for i in range(npods))
    redis_cpu = cpu1[npods] - cpu0[npods]  # the masters (summed on a cluster)
    redis_all = redis_cpu + sum(
        cpu1[npods + g] - cpu0[npods + g] for g in cluster.redis.additive_groups()
    )
    res.checks += [
        Check("deliveries received", got, expected, "msgs", higher_is_better=True),
    ]
    if kind == "group":
        strays = sum(stats[(p, False)].received for p in range(npods))
        res.checks.append(Check("stray deliveries (non-members)", strays, 0, "msgs"))
    d = res.details
    d["broadcasts"] = k
    d["expected deliveries"] = expected
    d["received deliveries"] = got
    d["first POST -> last delivery (s)"] = wall
    d["first POST -> last POST answered (s)"] = t_posted - t0
    d["POST /v1/messages latency median (ms)"] = percentile(sorted(post_ms), 50)
    d["deliveries/s (wall clock, whole cluster)"] = got / wall if wall > 0 and got else 0.0
    d["deliveries/s per pod CPU-second (sum of pods)"] = got / pods_cpu if pods_cpu else 0.0
    for p in range(npods):
        want = expect_per_pod[p] * k
        got_p = stats[(p, True)].received + stats[(p, False)].received
        last_p = max(stats[(p, True)].last_received, stats[(p, False)].last_received)
        cpu_p = cpu1[p] - cpu0[p]
        d[f"pod-{p}: received / expected"] = f"{got_p:,} / {want:,}"
        d[f"pod-{p}: first POST -> last delivery (s)"] = last_p - t0 if got_p else float("nan")
        d[f"pod-{p}: CPU (s)"] = cpu_p
        d[f"pod-{p}: CPU per delivery (us)"] = cpu_p / got_p * 1e6 if got_p else float("nan")
    # Per broadcast, Redis does one PUBLISH to every pod: little next to its background over
    # a long fan-out, hence the net figures (background from the idle reading before).
    nets: list[float] = []
    for g, name in enumerate(cluster.names[npods:]):
        used = cpu1[npods + g] - cpu0[npods + g]
        nets.append(used - idle[npods + g] * window)
        d[f"{name} CPU (s)"] = used
        d[f"{name} CPU per broadcast (us)"] = used / k * 1e6 if k else float("nan")
        d[f"{name} CPU per broadcast, net of idle (us)"] = nets[-1] / k * 1e6 if k else float("nan")
        d[f"{name} idle CPU before (% of a core)"] = 100 * idle[npods + g]
    d["all pods + redis CPU per delivery (us)"] = (
        (pods_cpu + redis_cpu) / got * 1e6 if got else float("nan")
    )
    d["pods' core utilisation (% of one core)"] = 100 * pods_cpu / wall if wall > 0 else 0.0
    d["pods' + every redis process's utilisation (% of one core)"] = (
        100 * (pods_cpu + redis_all) / wall if wall > 0 else 0.0
    )
    d["client process CPU utilisation (%)"] = 100 * (self1 - self0) / wall if wall > 0 else 0.0
    d["other processes' CPU on the host (cores)"] = other
    sm, label = cluster.summary, f"fan-out {kind}"
    sm[f"{label}: deliveries/s (one shared core)"] = got / wall if wall > 0 and got else 0.0
    sm[f"{label}: pods' CPU per delivery (us)"] = pods_cpu / got * 1e6 if got else float("nan")
    for g, name in enumerate(cluster.names[npods:]):
        sm[f"{label}: {name} CPU per broadcast, net of idle (us)"] = (
            nets[g] / k * 1e6 if k else float("nan")
        )
    sm[f"{label}: other processes' CPU (cores)"] = other
    for p in range(npods):
        want = expect_per_pod[p] * k
        got_p = stats[(p, True)].received + stats[(p, False)].received
        if kind == "group":
            got_p = stats[(p, True)].received
        if want and got_p < want:
            res.notes.append(
                f"pod-{p} delivered {got_p:,} of {want:,}"
                + (" (pod-0 is the API pod that published)" if p == 0 else "")
            )
    res.notes += busy_host_notes(other)
    if wall > 0 and pods_cpu / wall > 0.85:
        res.notes.append(
            "the pods' shared core was saturated: the wall-clock rate is what one core running "
            "all pods achieves"
        )
    for path in prof:
        res.notes += summarize_py_spy(path)
    return res


async def phase_fanout(args: argparse.Namespace, cluster: Cluster) -> list[PhaseResult]:
    """``--tunnels-per-pod`` clients on every pod, then broadcasts to all and to a group."""
    per_pod, npods = args.tunnels_per_pod, len(cluster.pods)
    every = max(1, round(1 / args.group_fraction)) if args.group_fraction > 0 else 0
    stats = {(p, m): RawWsStats() for p in range(npods) for m in (True, False)}

    def is_member(i: int) -> bool:
        return every > 0 and i % every == 0

    await quiet(args, "opening fan-out tunnels", 30)
    open_cpu0 = cluster.cpu()
    open_noise = NoiseMeter(cluster.measured)
    open_noise.start()
    t0 = time.perf_counter()
    share = max(1, args.connect_concurrency // npods)
    with profiles(args, cluster, "fanout-open", [0]) as open_prof:
        opened = await asyncio.gather(
            *(
                open_on_pod(
                    cluster,
                    p,
                    per_pod,
                    f"p{p}u",
                    lambda i, p=p: stats[(p, is_member(i))],  # type: ignore[misc]
                    lambda i: [GROUP] if is_member(i) else [],
                    share,
                    args.phase_timeout,
                )
                for p in range(npods)
            )
        )
    t_open = time.perf_counter() - t0
    clients = [c for o in opened for c in o.clients]
    everyone = [len(o.clients) for o in opened]
    members = [sum(1 for i in o.indexes if is_member(i)) for o in opened]
    results: list[PhaseResult] = []
    try:
        counts = await wait_pods_open(
            cluster, lambda c: all(c[p] >= everyone[p] for p in range(npods)), 120
        )
        # Each pod's tunnel.connected webhooks are batched; give them a moment to go out.
        await asyncio.sleep(min(args.settle, 1.0))
        open_cpu = [b - a for a, b in zip(open_cpu0, cluster.cpu(), strict=True)]
        open_other = open_noise.stop()
        total_open = sum(everyone)
        setup = PhaseResult(f"fan-out setup: {npods} pods x {per_pod:,} tunnels")
        setup.key = "fanout_setup"
        setup.details.update(
            {
                "tunnels opened per pod": ", ".join(f"{n:,}" for n in everyone),
                "broker-reported open per pod": ", ".join(f"{c:,.0f}" for c in counts),
                "group members per pod": ", ".join(f"{n:,}" for n in members),
                "time to create+connect all (s)": t_open,
                "tunnels opened per second (whole cluster)": len(clients) / t_open
                if t_open
                else 0.0,
                f"CPU per tunnel open, pods / {cluster.redis_label} (us)": ", ".join(
                    f"{c / everyone[p] * 1e6:.0f}" if everyone[p] else "n/a"
                    for p, c in enumerate(open_cpu[:npods])
                )
                + (f" / {open_cpu[npods] / total_open * 1e6:.0f}" if total_open else ""),
                "other processes' CPU on the host (cores)": open_other,
            }
        )
        for p, o in enumerate(opened):
            if o.errors:
                setup.notes.append(f"pod-{p}: {len(o.errors)} open errors, first: {o.errors[0]}")
        for path in open_prof:
            setup.notes += summarize_py_spy(path)
        show(setup)
        results.append(setup)
        await asyncio.sleep(args.settle)
        for kind in ("all", "group"):
            if kind == "group" and not every:
                continue
            try:
                result = await broadcast_round(args, cluster, kind, stats, members, everyone)
            except Exception as exc:  # report and go on
                traceback.print_exc()
                result = PhaseResult(f"fan-out {kind}", error=f"{type(exc).__name__}: {exc}")
                result.key = f"fanout_{kind}"
            show(result)
            results.append(result)
            await asyncio.sleep(args.settle)
    finally:
        t_close = time.perf_counter()
        await close_raw(clients, 10)
    # Every pod unregisters its thousands of tunnels at once: a burst of Redis calls. Let
    # it finish (and say how long it took) rather than stopping pods in the middle of it.
    counts = await wait_pods_open(cluster, lambda c: all(x <= 0 for x in c), 60)
    t_closed = time.perf_counter() - t_close
    # ... and whether every pod is still ready afterwards (a pod that took the burst for an
    # outage answers 503 until it has repaired).
    ready = await pods_ready(cluster)
    for _ in range(30):
        if all(code == 200 for code in ready):
            break
        await asyncio.sleep(0.5)
        ready = await pods_ready(cluster)
    print(
        f"fan-out teardown: {len(clients):,} clients closed; pods' open tunnels "
        + ", ".join(f"{c:,.0f}" for c in counts)
        + f" after {t_closed:.1f} s"
        + ("" if all(c <= 0 for c in counts) else " (gave up waiting: see the pods' logs)")
        + "; /readyz "
        + ", ".join(str(code) for code in ready)
        + f" after {time.perf_counter() - t_close:.1f} s"
    )
    return results


async def pods_ready(cluster: Cluster) -> list[int]:
    """Each pod's ``GET /readyz`` status (0: no answer)."""
    out: list[int] = []
    for pod in cluster.pods:
        status = (await asyncio.to_thread(http_get, f"{pod.base_url}/readyz", 1.0))[0]
        out.append(status)
    return out


# --------------------------------------------------------------------------- main


PHASES: dict[str, Callable[[argparse.Namespace, Cluster], Any]] = {
    "latency": phase_latency,
    "broadcast_cost": phase_broadcast_cost,
    "fanout": phase_fanout,
}

QUICK = {
    "latency_tunnels": 10,
    "pushes": 300,
    "broadcast_pushes": 300,
    "latency_warmup": 50,
    "chunk": 100,
    "tunnels_per_pod": 300,
    "broadcasts": 5,
    "wait_quiet": 3.0,
    "settle": 0.5,
    "idle_window": 0.5,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("phases (none given = all)")
    for name in PHASES:
        flag = name.replace("_", "-")
        g.add_argument(f"--{flag}", action="store_true", help=f"run the {flag} phase")
    p.add_argument("--quick", action="store_true", help="small sizes, finishes in < 1 minute")
    p.add_argument("--pods", type=int, default=3, help="broker pods (>= 2)")
    p.add_argument("--latency-tunnels", type=int, default=100, help="clients on pod 0")
    p.add_argument("--pushes", type=int, default=3000, help="measured pushes per mode")
    p.add_argument("--latency-warmup", type=int, default=200, help="warm-up pushes per mode")
    p.add_argument("--chunk", type=int, default=250, help="pushes per alternating chunk")
    p.add_argument("--payload-bytes", type=int, default=64, help="push payload size")
    p.add_argument("--push-timeout", type=float, default=2.0, help="wait for one frame (s)")
    p.add_argument("--target-delta-ms", type=float, default=2.0, help="cross - local p50 limit")
    p.add_argument(
        "--broadcast-pushes", type=int, default=1000, help="broadcast-cost phase: group pushes"
    )
    p.add_argument("--tunnels-per-pod", type=int, default=3000, help="fan-out clients per pod")
    p.add_argument("--broadcasts", type=int, default=20, help="fan-out POSTs per target kind")
    p.add_argument("--broadcast-bytes", type=int, default=64, help="broadcast payload size")
    p.add_argument(
        "--group-fraction", type=float, default=0.5, help="share of tunnels in the group (0: off)"
    )
    p.add_argument("--connect-concurrency", type=int, default=150, help="tunnels opening at once")
    p.add_argument("--settle", type=float, default=2.0, help="pause after opening tunnels (s)")
    p.add_argument("--idle-window", type=float, default=2.0, help="idle CPU reading (s)")
    p.add_argument("--drain-timeout", type=float, default=5.0, help="give up w/o progress (s)")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="hard limit per step (s)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each phase wait up to this long for the host to go idle (0: off)",
    )
    p.add_argument("--pod-cpus", default="0", help="CPUs for the pods, comma list, cycled")
    p.add_argument(
        "--topology",
        choices=("standalone", "sentinel", "cluster"),
        default="standalone",
        help="Redis: one server, master + replica + 3 sentinels, or 3 masters + 3 replicas",
    )
    p.add_argument("--redis-cpu", type=int, default=0, help="every redis-server process")
    p.add_argument("--load-cpu", type=int, default=1, help="this process + webhook receiver")
    p.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "redis-server",
        help="binary (standalone; sentinel and cluster use the one on PATH)",
    )
    p.add_argument("--log-level", default="warning", help="broker --log-level")
    p.add_argument("--broker-arg", action="append", default=[], help="extra pod argument")
    p.add_argument(
        "--app-limit", action="append", default=[], metavar="KEY=VALUE", help="[apps.limits]"
    )
    p.add_argument("--work-dir", help="where logs/apps file go (default: a temp dir)")
    p.add_argument("--py-spy", metavar="DIR", help="record pod profiles (numbers get worse)")
    p.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write results as JSON ('-'=stdout)"
    )
    args = p.parse_args(argv)
    if args.quick:
        defaults = p.parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):  # explicit flags still win
                setattr(args, key, value)
    if args.pods < 2:
        p.error("--pods must be at least 2 (pod 1 is the cross-pod API)")
    chosen = [name for name in PHASES if getattr(args, name)]
    args.phases = chosen or list(PHASES)
    return args


async def run(args: argparse.Namespace, work: Path) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    async with cluster_env(args, work) as cluster:
        redis = cluster.redis
        info = PhaseResult(
            f"cluster: {cluster.npods} pods + redis {redis.topology} "
            f"({len(redis.procs)} redis-server process{'es' if len(redis.procs) > 1 else ''})"
        )
        info.key = "cluster"
        info.details["redis topology"] = redis.topology
        info.details["pod startup (s)"] = ", ".join(f"{s:.2f}" for s in cluster.startup_seconds)
        info.details["redis ports"] = redis.ports
        if redis.where:
            info.details["redis servers' directory"] = redis.where
        info.details["pod ports"] = ", ".join(str(p.port) for p in cluster.pods)
        info.details.update(redis.shards)
        results.append(info)
        for name in args.phases:
            try:
                got = await PHASES[name](args, cluster)
            except Exception as exc:  # report and go on to the next phase
                traceback.print_exc()
                got = [PhaseResult(name, error=f"{type(exc).__name__}: {exc}", key=name)]
            for r in got:
                show(r)
            results.extend(got)
        await cluster.stop()
        info.details["pod shutdown (s)"] = ", ".join(f"{s:.2f}" for s in cluster.shutdown_seconds)
        info.notes += pod_log_notes(cluster)
        show(info)
        if cluster.summary:
            summary = PhaseResult(f"summary: redis {redis.topology}", key="summary")
            summary.details.update(cluster.summary)
            summary.notes.append(
                f"'Redis' per push / per broadcast = {cluster.redis_label}; a cluster's is the "
                "sum over its masters, and the per-shard lines show where it went"
            )
            show(summary)
            results.append(summary)
    return results


def pod_log_notes(cluster: Cluster, per_pod: int = 6) -> list[str]:
    """The pods log at ``--log-level`` (warning by default): whatever they wrote is worth a
    look ("redis unreachable", a failover, a traceback). Per pod: the distinct messages
    (timestamps aside), each with the first time and how often, and a traceback's last line
    ("TypeError: ...") rather than its frames."""
    notes: list[str] = []
    for pod in cluster.pods:
        try:
            lines = [ln for ln in pod.log_path.read_text(errors="replace").splitlines() if ln]
        except OSError:
            continue
        if not lines:
            continue
        first: dict[str, str] = {}
        count: dict[str, int] = {}
        for line in lines:
            if line.startswith((" ", "\t", "Traceback")) or line.endswith("last):"):
                continue
            stamp = TIMESTAMP.match(line)
            message = line[stamp.end() :] if stamp else line
            message = ADDRESS.sub("0x…", message)[:200]
            first.setdefault(message, stamp.group(0).strip() if stamp else "")
            count[message] = count.get(message, 0) + 1
        notes.append(f"{pod.name} logged {len(lines):,} line(s) ({pod.log_path}):")
        for message in list(first)[:per_pod]:
            times = f" (x{count[message]:,})" if count[message] > 1 else ""
            notes.append(f"  {first[message]} {message}{times}".replace("   ", "  ", 1))
        if len(first) > per_pod:
            notes.append(f"  ... and {len(first) - per_pod} other message(s)")
    return notes


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    pinned = pin_to_cpu(args.load_cpu)
    signal.signal(signal.SIGTERM, _sigterm)
    cpus = os.cpu_count() or 1
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tb-cluster-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    need = args.tunnels_per_pod * args.pods + args.latency_tunnels + 500
    if nofile < need:
        print(f"warning: fd limit {nofile} < {need}", file=sys.stderr)
    print(
        f"tunnel broker cluster bench: phases={','.join(args.phases)} pods={args.pods} "
        f"repo={REPO_ROOT} python={sys.version.split()[0]} cpus={cpus} logs={work}\n"
        f"layout: pods on CPU(s) {args.pod_cpus}, redis ({args.topology}) on CPU "
        f"{args.redis_cpu}, "
        f"load (this process, pinned={pinned}) + webhook receiver on CPU {args.load_cpu}"
        + (
            " -- on this 2-CPU host all pods and redis share one core, so wall-clock rates "
            "are one core's worth of cluster"
            if cpus <= 2
            else ""
        )
    )
    sys.stdout.flush()
    results: list[PhaseResult] = []
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            results = runner.run(run(args, work))
    except KeyboardInterrupt:
        print("interrupted; stopping the cluster", file=sys.stderr)
        return 130
    finally:
        for proc in reversed(_STARTED):  # last resort; each stop is a no-op if already done
            proc.stop(10)
        run_cleanups()
    if args.json:
        doc = {
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "results": {r.key or r.name: r.as_dict() for r in results},
        }
        text = json.dumps(doc, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    failed = any(r.error or not all(c.passed for c in r.checks) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

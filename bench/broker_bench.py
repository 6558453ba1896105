"""Tunnel Broker benchmarks: idle memory per tunnel, echo round trips, broadcast fan-out,
and a reconnect storm after a broker restart.

Why these: they are the costs an operator sizes a node by. Idle memory bounds how many
mini-programs one pod can hold; the echo round trip (client -> broker -> webhook -> broker ->
client) is the hot path of every interactive app; broadcast fan-out is what a live board or a
chat room with many members costs; the storm is every client of a restarted pod coming back
at once. Each phase that opens tunnels also reports the setup cost (broker CPU per tunnel),
split into the API call (POST /v1/tunnels) and the WebSocket connect.

Layout (2+ CPUs): the broker alone on CPU 0; this process, the webhook receiver and the load
processes on CPU 1 (``--client-cpus`` moves the load processes). The many-socket phases
(memory, broadcast, storm) hold their tunnels in ``--client-processes`` load processes (this
file run as ``broker_bench.py load-worker``), each with at most ~15,000 sockets and its own
loopback source address, so 50,000 tunnels fit under a 20,000-descriptor limit per process
and the ephemeral port range; their CPU is reported. Broker CPU is read from /proc for the
broker process tree, so "CPU per round trip" / "CPU per delivery" are the broker's own costs,
independent of how fast the load side is.

    .venv/bin/python bench/broker_bench.py --all                  # full sizes (targets)
    .venv/bin/python bench/broker_bench.py --all --tunnels 1000 --duration 3   # quick
    .venv/bin/python bench/broker_bench.py --memory --echo --broadcast --sizes 2000,10000
    .venv/bin/python bench/broker_bench.py --memory --tunnels 50000 --client-processes 4
    .venv/bin/python bench/broker_bench.py --storm --tunnels 10000
    .venv/bin/python bench/broker_bench.py --echo --json out.json --py-spy /tmp/prof
    .venv/bin/python bench/broker_bench.py --metering compare --repeat 3 --duration 4

Each phase starts its own broker and receiver and stops them; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import common
import netns
import psutil
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
    http_get,
    new_event_loop,
    pin_to_cpu,
    raise_nofile_limit,
    raw_ws_connect,
    start_broker,
    start_webhook_receiver,
    wait_for_quiet_host,
    webhook_stats,
    write_apps_file,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

OPEN_GAUGE = "tb_tunnels_open"

Result = dict[str, Any]


# --------------------------------------------------------------------------- reporting


@dataclass
class Check:
    """One number compared with its target; ``higher_is_better`` picks the direction."""

    name: str
    value: float
    target: float
    unit: str
    higher_is_better: bool = False

    @property
    def passed(self) -> bool:
        if self.value != self.value:  # NaN: not measured
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "target": self.target,
            "unit": self.unit,
            "pass": self.passed,
            "direction": ">=" if self.higher_is_better else "<=",
        }


@dataclass
class PhaseResult:
    """Everything one phase measured: headline checks, detail numbers, notes for humans."""

    name: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    key: str = ""  # the phase's flag name: the stable key in --json output

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.name,
            "checks": {c.name: c.as_dict() for c in self.checks},
            "details": self.details,
            "notes": self.notes,
            "error": self.error,
        }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if value == float("inf"):
            return "inf"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_phase(result: PhaseResult) -> None:
    """A plain-text table: headline checks with PASS/FAIL, then the detail numbers."""
    width = 78
    print()
    print("=" * width)
    print(f" {result.name}")
    print("=" * width)
    if result.error:
        print(f" ERROR: {result.error}")
    for c in result.checks:
        op = ">=" if c.higher_is_better else "<="
        verdict = "PASS" if c.passed else "FAIL"
        print(
            f" {c.name:<34} {_fmt(c.value):>12} {c.unit:<8} target {op} {_fmt(c.target):>8}"
            f"  {verdict}"
        )
    if result.checks:
        print("-" * width)
    for key, value in result.details.items():
        print(f" {key:<46} {_fmt(value):>20}")
    for note in result.notes:
        print(f" note: {note}")
    sys.stdout.flush()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(q / 100 * len(sorted_values))
    idx = min(len(sorted_values) - 1, max(0, rank - 1))
    return sorted_values[idx]


def self_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


# --------------------------------------------------------------------------- profiling


def _pin_quietly(cpu: int) -> None:
    pin_to_cpu(cpu)


def _py_spy_binary() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


@contextlib.contextmanager
def py_spy_record(pid: int, out: Path | None, load_cpu: int, rate: int = 200) -> Iterator[None]:
    """Sample the broker with py-spy if asked (profiled runs' own numbers are slightly worse).

    Output is py-spy's "raw" collapsed-stack format so :func:`summarize_py_spy` can print the
    hottest functions in the report; feed it to flamegraph.pl / speedscope for a picture.
    """
    binary = _py_spy_binary()
    if out is None or binary is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    # Blocking mode (py-spy pauses the broker ~tens of us per sample): --nonblocking was
    # tried and lost most stacks' roots, which makes the inclusive numbers useless.
    cmd = [binary, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)]
    with (out.parent / f"{out.stem}.py-spy.log").open("wb") as log:
        proc = subprocess.Popen(  # fixed argv, no shell
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _pin_quietly(load_cpu),
        )
    time.sleep(0.5)  # let it attach before the measured window starts
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def summarize_py_spy(path: Path, top: int = 12) -> list[str]:
    """Top functions by self samples and by inclusive samples from a raw py-spy file."""
    if not path.exists():
        return []
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = [f.split(" (", 1)[0] + _short_location(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if not total:
        return []
    lines = [f"py-spy: {total} samples -> {path}", "  self time:"]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in self_counts.most_common(top)]
    lines.append("  inclusive (tunnel_broker / websockets / uvicorn / starlette / httpx):")
    interesting = ("tunnel_broker", "websockets", "uvicorn", "starlette", "httpx", "httpcore")
    picked = [(n, c) for n, c in incl_counts.most_common() if any(k in n for k in interesting)]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in picked[:top]]
    return lines


def _short_location(frame: str) -> str:
    """``func (path/to/mod.py:12)`` -> `` [pkg/mod.py]`` so frames group by function."""
    _, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    parts = Path(loc).parts
    return f" [{'/'.join(parts[-2:])}]" if parts else ""


# --------------------------------------------------------------------------- environment

# The targets (#16).
RSS_PER_TUNNEL_KB = 16
SETUP_CPU_US = 500
DELIVERIES_PER_S = 100_000
# Admission defaults (docs/operations.md), for "refused no more than the documented limit".
DEFAULT_MAX_CONNECTIONS = 100_000
DEFAULT_WEBHOOK_BUFFER_EVENTS = 50_000
BROKER_BACKLOG = 4096  # tunnel_broker/server.py
# Sockets a broker holds besides its tunnels: API and webhook connections, the listener,
# /metrics scrapes, files. The fd pre-check keeps this much room.
FD_HEADROOM = 300


@dataclass
class BenchEnv:
    """One broker + one webhook receiver + an API client, torn down by :func:`bench_env`."""

    broker: ManagedProcess
    receiver: ManagedProcess
    api: ApiClient
    args: argparse.Namespace
    apps: Path
    work: Path
    secret_key: str
    extra_args: list[str]
    shutdown_seconds: float | None = None
    logs: list[Path] = field(default_factory=list)

    async def stop_broker(self) -> float:
        """Stop the broker while our clients still run, so they answer its close frames."""
        if self.shutdown_seconds is None:
            self.shutdown_seconds = await asyncio.to_thread(self.broker.stop)
        return self.shutdown_seconds

    async def restart_broker(self, name: str) -> float:
        """Start a new broker on the stopped one's port, with its apps file and secret key
        (connect URLs it signed stay valid); returns seconds from spawn to ready."""
        assert self.shutdown_seconds is not None, "stop_broker() first"
        await self.api.aclose()
        t0 = time.perf_counter()
        self.broker = await asyncio.to_thread(
            _start_bench_broker, self.args, self.apps, self.work, self.secret_key,
            self.extra_args, self.broker.port, name,
        )  # fmt: skip
        ready = time.perf_counter() - t0
        self.logs.append(self.broker.log_path)
        self.api = ApiClient(HOST, self.broker.port, API_KEY, max_connections=2)
        self.shutdown_seconds = None
        return ready


def _start_bench_broker(
    args: argparse.Namespace,
    apps: Path,
    work: Path,
    secret_key: str,
    extra_args: list[str],
    port: int | None = None,
    name: str = "broker",
) -> ManagedProcess:
    return start_broker(
        apps,
        work,
        cpu=args.broker_cpu,
        log_level=args.log_level,
        extra_args=extra_args,
        module=args.broker_module,
        port=port,
        secret_key=secret_key,
        name=name,
    )


@contextlib.asynccontextmanager
async def bench_env(
    args: argparse.Namespace, work: Path, extra_args: Sequence[str] = ()
) -> AsyncIterator[BenchEnv]:
    """A broker (``extra_args`` before ``--broker-arg``, which may override them) and
    receiver for one phase; a phase may restart the broker (:meth:`BenchEnv.restart_broker`).
    """
    receiver = start_webhook_receiver(work, cpu=args.load_cpu)
    env: BenchEnv | None = None
    try:
        # The API rate limit (1,000/s by default) is not what is measured: creating 10,000
        # connect URLs back to back must not meet 429s.
        extra = {"api_requests_per_second": "1000000", "api_burst": "1000000"}
        extra.update(item.split("=", 1) for item in args.app_limit)
        apps = write_apps_file(
            work / "apps.toml", f"{receiver.base_url}/webhook", extra_limits=extra
        )
        key = secrets.token_urlsafe(32)
        broker_args = [*extra_args, *args.broker_arg]
        broker = await asyncio.to_thread(_start_bench_broker, args, apps, work, key, broker_args)
        api = ApiClient(HOST, broker.port, API_KEY, max_connections=args.api_connections)
        env = BenchEnv(broker, receiver, api, args, apps, work, key, broker_args)
        env.logs.append(broker.log_path)
        yield env
        await env.stop_broker()
    finally:
        if env is not None:
            await env.api.aclose()
            await asyncio.to_thread(env.broker.stop)
        receiver.stop(5)


def broker_fd_problem(broker: ManagedProcess, tunnels: int) -> str | None:
    """Why this broker cannot hold ``tunnels`` sockets, if it cannot (its RLIMIT_NOFILE)."""
    limit = broker.nofile_limit()
    if not limit or limit >= tunnels + FD_HEADROOM:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"the broker may hold {limit:,} file descriptors, fewer than {tunnels:,} tunnels + "
        f"{FD_HEADROOM}: the bench raises its soft limit to the hard one ({hard:,} here; "
        "`ulimit -Hn`), and only a process with CAP_SYS_RESOURCE can raise the hard limit. "
        f"Run from a shell with `ulimit -Hn {tunnels + 10 * FD_HEADROOM}` or more"
    )


def broker_log_problems(paths: Sequence[Path], limit: int = 3) -> tuple[int, list[str]]:
    """Warning-or-worse lines (and tracebacks) in broker logs: their count and the first few,
    so that a run whose broker complained says so next to its numbers."""
    count = 0
    first: list[str] = []
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(" ", 3)
            level = fields[2] if len(fields) > 2 else ""
            if level in ("WARNING", "ERROR", "CRITICAL") or line.startswith("Traceback"):
                count += 1
                if len(first) < limit:
                    first.append(f"{path.name}: {line[:240]}")
    return count, first


def add_log_notes(res: PhaseResult, paths: Sequence[Path]) -> None:
    count, first = broker_log_problems(paths)
    res.details["broker log lines at WARNING or above"] = count
    res.notes += [f"broker log: {line}" for line in first]


async def create_tunnel(api: ApiClient, user_id: str) -> str:
    """POST /v1/tunnels and return the connect_url; raises with the problem detail on error."""
    doc = await api.post("/v1/tunnels", {"user_id": user_id}, expect=201)
    return str(doc["connect_url"])


async def open_raw_tunnels(
    env: BenchEnv, n: int, concurrency: int, prefix: str, stats: RawWsStats, timeout: float
) -> tuple[list[RawWsProtocol], list[str]]:
    """Create and connect ``n`` tunnels (one user each) in this process, ``concurrency`` at a
    time (the warm-up; the measured tunnels are opened by load processes, :class:`LoadPool`).
    """
    clients: list[RawWsProtocol] = []
    errors: list[str] = []
    next_index = 0
    max_errors = max(10, n // 100)

    async def worker() -> None:
        nonlocal next_index
        while next_index < n and len(errors) < max_errors:
            i = next_index
            next_index += 1
            try:
                url = await create_tunnel(env.api, f"{prefix}{i}")
                clients.append(await raw_ws_connect(url, stats))
            except Exception as exc:  # count and carry on; too many stops the loop
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    except TimeoutError:
        errors.append(f"timed out after {timeout}s with {len(clients)}/{n} open")
    return clients, errors


async def wait_for_open(env: BenchEnv, n: int, timeout: float) -> tuple[float, str]:
    """Wait until the broker says ``n`` tunnels are open; returns (count, source).

    Prefers the ``tb_tunnels_open`` gauge; falls back to the receiver's count of
    ``tunnel.connected`` webhooks, which the broker only sends once it holds the tunnel.
    """
    deadline = time.monotonic() + timeout
    gauge: float | None = None
    connected = 0
    while time.monotonic() < deadline:
        gauge = await asyncio.to_thread(broker_metric, env.broker, OPEN_GAUGE)
        connected = (await asyncio.to_thread(webhook_stats, env.receiver)).get("connected", 0)
        if gauge is not None and gauge >= n:
            return gauge, OPEN_GAUGE
        if gauge is None and connected >= n:
            return float(connected), "webhook tunnel.connected count"
        await asyncio.sleep(0.25)
    if gauge is not None:
        return gauge, f"{OPEN_GAUGE} (timed out)"
    return float(connected), "webhook tunnel.connected count (timed out)"


async def close_raw(clients: Sequence[RawWsProtocol | None], wait: float = 5.0) -> None:
    """Close handshakes for all clients, then abort whatever is still open after ``wait``."""
    live = [c for c in clients if c is not None]
    for c in live:
        c.close()
    pending = [c.closed for c in live if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=wait)
    for c in live:
        c.abort()


# --------------------------------------------------------------------------- load processes
#
# The many-socket phases spread their clients over load processes (``--client-processes``):
# each process may hold only so many file descriptors (20,000 on some hosts), one source
# address has only the ephemeral port range towards the broker's port, and the CPU each
# process spends is reported so a reader can tell a client-bound run. A load process is this
# file run as ``broker_bench.py load-worker``; it reads one JSON command a line on stdin and
# answers each with one JSON line on stdout (``LoadWorker.op_*``).

CLIENTS_PER_PROCESS = 15_000


def default_client_processes(tunnels: int) -> int:
    """Enough load processes that none holds more than ~15,000 sockets."""
    return max(1, math.ceil(tunnels / CLIENTS_PER_PROCESS))


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """The mini-program client's reconnect wait (clients/miniprogram ``backoffDelay``):
    exponential from ``base``, capped at ``cap``, a random point in the upper half."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.random() * ceiling / 2


_HTTP_STATUS = re.compile(r"HTTP/1\.[01] (\d{3})")


def error_kind(exc: BaseException) -> str:
    """A short, countable name for a failed connect: ``HTTP 503``, ``TimeoutError``..."""
    match = _HTTP_STATUS.search(str(exc))
    if match:
        return f"HTTP {match.group(1)}"
    return type(exc).__name__


async def each_bounded(
    count: int, work: Callable[[int], Awaitable[None]], concurrency: int, timeout: float
) -> tuple[Counter[str], list[str]]:
    """``work(0) ... work(count - 1)``, ``concurrency`` at a time, within ``timeout``; a
    failure is counted by kind and the loop carries on, until failures pass 1% (at least
    10). Returns the counts (``phase timeout`` if time ran out) and the first three."""
    kinds: Counter[str] = Counter()
    first: list[str] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count and sum(kinds.values()) < max(10, count // 100):
            i = next_index
            next_index += 1
            try:
                await work(i)
            except Exception as exc:  # count and carry on; too many stops the loop
                kinds[error_kind(exc)] += 1
                if len(first) < 3:
                    first.append(f"{type(exc).__name__}: {exc}"[:300])

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    except TimeoutError:
        kinds["phase timeout"] += 1
    return kinds, first


class LoadWorker:
    """The client side of one load process: its share of the tunnels and their counters."""

    def __init__(self, index: int, local_host: str | None, api_connections: int) -> None:
        self.index = index
        self.local_host = local_host
        self.api_connections = api_connections
        self.stats = RawWsStats()
        self.urls: list[str | None] = []
        self.clients: list[RawWsProtocol | None] = []

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"op_{cmd['op']}")
        reply: dict[str, Any] = await handler(**cmd.get("args", {}))
        return reply

    def open_clients(self) -> list[RawWsProtocol]:
        return [c for c in self.clients if c is not None and not c.closed.done()]

    async def op_hello(self) -> dict[str, Any]:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return {"pid": os.getpid(), "nofile": soft, "local_host": self.local_host}

    async def op_create(
        self, port: int, prefix: str, start: int, count: int, concurrency: int, timeout: float
    ) -> dict[str, Any]:
        """POST /v1/tunnels ``count`` times (users ``prefix+start...``); keeps the URLs."""
        api = ApiClient(HOST, port, API_KEY, max_connections=self.api_connections)
        self.urls = [None] * count

        async def create(i: int) -> None:
            self.urls[i] = await create_tunnel(api, f"{prefix}{start + i}")

        try:
            kinds, first = await each_bounded(count, create, concurrency, timeout)
        finally:
            await api.aclose()
        created = sum(1 for u in self.urls if u)
        return {"created": created, "errors": dict(kinds), "first_errors": first}

    async def op_connect(self, concurrency: int, timeout: float) -> dict[str, Any]:
        """Open every created URL, ``concurrency`` at a time."""
        urls = self.urls
        self.clients = [None] * len(urls)
        todo = [i for i, u in enumerate(urls) if u]

        async def connect(n: int) -> None:
            i = todo[n]
            url = urls[i]
            assert url is not None
            self.clients[i] = await raw_ws_connect(url, self.stats, local_host=self.local_host)

        kinds, first = await each_bounded(len(todo), connect, concurrency, timeout)
        opened = sum(1 for c in self.clients if c is not None)
        return {"opened": opened, "errors": dict(kinds), "first_errors": first}

    async def op_stats(self) -> dict[str, Any]:
        s = self.stats
        return {
            "open": len(self.open_clients()),
            "received": s.received,
            "pings": s.pings,
            "closed": {str(k): v for k, v in s.closed.items()},
            "lost": s.lost,
        }

    async def op_reset(self) -> dict[str, Any]:
        self.stats.received = 0
        self.stats.received_bytes = 0
        self.stats.last_received = 0.0
        return {"open": len(self.open_clients())}

    async def op_wait_received(
        self, per_client: int, idle_timeout: float, hard_timeout: float
    ) -> dict[str, Any]:
        """Wait until every open client got ``per_client`` messages since the reset (or no
        progress for ``idle_timeout`` s, or ``hard_timeout`` s)."""
        expected = len(self.open_clients()) * per_client
        stats = self.stats
        await wait_progress(lambda: stats.received, expected, idle_timeout, hard_timeout)
        return {
            "expected": expected,
            "received": stats.received,
            "last_received": stats.last_received,
        }

    async def op_wait_closed(self, timeout: float) -> dict[str, Any]:
        """Wait until every client's socket has ended (the broker closed them); their codes."""
        pending = [c.closed for c in self.clients if c is not None and not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        codes: Counter[str] = Counter()
        for c in self.clients:
            if c is not None:
                codes[str(c.closed.result()) if c.closed.done() else "still open"] += 1
        return {"codes": dict(codes)}

    async def op_reconnect(
        self,
        jitter: float,
        retry_base: float,
        retry_cap: float,
        max_attempts: int,
        deadline: float,
        grace: float,
        connect_timeout: float,
        t_ready: float,
    ) -> dict[str, Any]:
        """Every client whose socket the old broker closed connects again with its connect
        URL, all at once (after a random ``jitter`` s if given). A connect the broker
        refuses (it accepts, then closes at once with a code) or that fails is retried after
        :func:`backoff_delay`, up to ``max_attempts`` and ``deadline`` s. A socket still
        open ``grace`` s after its handshake counts as connected at its handshake time.
        """
        refused: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        attempts_of: Counter[int] = Counter()
        connected_at: list[float] = []
        handshake_ms: list[float] = []
        first_errors: list[str] = []
        stop_at = time.perf_counter() + deadline
        todo = [i for i, c in enumerate(self.clients) if c is not None]

        async def one(i: int) -> None:
            url = self.urls[i]
            assert url is not None
            self.clients[i] = None
            if jitter > 0:
                await asyncio.sleep(random.random() * jitter)
            attempt = 0
            while True:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    proto = await raw_ws_connect(
                        url, self.stats, timeout=connect_timeout, local_host=self.local_host
                    )
                    t_open = time.perf_counter()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(proto.closed), grace)
                    if not proto.closed.done():
                        self.clients[i] = proto
                        connected_at.append(t_open - t_ready)
                        handshake_ms.append((t_open - t0) * 1e3)
                        attempts_of[attempt] += 1
                        return
                    code = proto.closed.result()
                    if code == 1006:  # no close frame: the socket dropped
                        errors["dropped after the handshake"] += 1
                    else:
                        refused[str(code)] += 1
                except Exception as exc:  # count, back off, retry
                    kind = error_kind(exc)
                    # An HTTP answer instead of 101 is a refusal too (503 above
                    # --max-connections); anything else is a failure.
                    (refused if kind.startswith("HTTP ") else errors)[kind] += 1
                    if len(first_errors) < 3:
                        first_errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if attempt >= max_attempts or time.perf_counter() >= stop_at:
                    attempts_of[-attempt] += 1  # negative: gave up after that many
                    return
                await asyncio.sleep(backoff_delay(attempt, retry_base, retry_cap))

        await asyncio.gather(*(one(i) for i in todo))
        connected_at.sort()
        return {
            "clients": len(todo),
            "connected": len(connected_at),
            "connected_at": [round(t, 4) for t in connected_at],
            "handshake_ms": sorted(round(t, 2) for t in handshake_ms),
            "attempts": {str(k): v for k, v in attempts_of.items()},
            "refused": dict(refused),
            "errors": dict(errors),
            "first_errors": first_errors,
        }

    async def op_close(self, wait: float) -> dict[str, Any]:
        await close_raw(self.clients, wait)
        self.clients = []
        return {}


async def _worker_loop(worker: LoadWorker, replies: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:  # the parent is gone: close up and exit
            break
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            break
        try:
            reply = await worker.handle(cmd)
            reply["ok"] = True
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()[-3000:]}
        reply["cpu"] = self_cpu_seconds()
        reply["t"] = time.perf_counter()
        replies.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        replies.flush()
    await close_raw(worker.clients, 2)


def _use_broker_host(host: str) -> None:
    """Where the broker listens (``--client-netns``: its end of the veth pair)."""
    global HOST
    HOST = common.HOST = host


def worker_main(argv: list[str]) -> int:
    """``broker_bench.py load-worker``: one load process (started by :class:`LoadPool`)."""
    p = argparse.ArgumentParser(prog="broker_bench.py load-worker")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--cpu", type=int, default=-1)
    p.add_argument("--local-host", default="")
    p.add_argument("--broker-host", default=HOST)
    p.add_argument("--api-connections", type=int, default=8)
    opts = p.parse_args(argv)
    _use_broker_host(opts.broker_host)
    # Replies go to the original stdout; anything else printed goes to the log (stderr).
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    raise_nofile_limit()
    if opts.cpu >= 0:
        pin_to_cpu(opts.cpu)
    worker = LoadWorker(opts.index, opts.local_host or None, opts.api_connections)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_worker_loop(worker, replies))
    return 0


@dataclass
class LoadProcess:
    """The parent's handle on one load process."""

    index: int
    proc: asyncio.subprocess.Process
    log_path: Path
    cpu: int
    share: int = 0

    def cpu_seconds(self) -> float:
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0


class LoadPool:
    """Load processes holding tunnels between them; :meth:`call` runs one command on all."""

    def __init__(self, procs: list[LoadProcess], timeout: float) -> None:
        self.procs = procs
        self.timeout = timeout

    @staticmethod
    def cpus(args: argparse.Namespace) -> list[int]:
        if args.client_cpus:
            return [int(c) for c in args.client_cpus.split(",")]
        return [args.load_cpu]

    async def call(
        self, op: str, per_worker: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Send ``op`` (same arguments to all, or one dict each) and wait for every reply."""
        if per_worker is None or isinstance(per_worker, dict):
            per_worker = [per_worker or {}] * len(self.procs)
        for lp, kwargs in zip(self.procs, per_worker, strict=True):
            assert lp.proc.stdin is not None
            lp.proc.stdin.write(json.dumps({"op": op, "args": kwargs}).encode() + b"\n")
        await asyncio.gather(*(lp.proc.stdin.drain() for lp in self.procs if lp.proc.stdin))

        async def reply(lp: LoadProcess) -> dict[str, Any]:
            assert lp.proc.stdout is not None
            line = await lp.proc.stdout.readline()
            if not line:
                tail = lp.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"load process {lp.index} exited during {op}:\n{tail}")
            doc: dict[str, Any] = json.loads(line)
            if not doc.get("ok"):
                raise RuntimeError(f"load process {lp.index} failed {op}:\n{doc.get('error')}")
            return doc

        async with asyncio.timeout(timeout or self.timeout):
            return await asyncio.gather(*(reply(lp) for lp in self.procs))

    def cpu_seconds(self) -> list[float]:
        return [lp.cpu_seconds() for lp in self.procs]

    async def stop(self) -> None:
        for lp in self.procs:
            if lp.proc.stdin is not None and not lp.proc.stdin.is_closing():
                lp.proc.stdin.write(b'{"op":"exit"}\n')
                lp.proc.stdin.close()
        for lp in self.procs:
            try:
                await asyncio.wait_for(lp.proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    lp.proc.kill()
                await asyncio.wait_for(lp.proc.wait(), 5)


@contextlib.asynccontextmanager
async def load_pool(args: argparse.Namespace, work: Path, tunnels: int) -> AsyncIterator[LoadPool]:
    """Start the load processes for ``tunnels`` tunnels (``--client-processes``, else enough
    that none holds more than ~15,000), each on its own loopback source address, pinned
    round-robin to ``--client-cpus``; stop them (their clients close) on exit."""
    n = args.client_processes or default_client_processes(tunnels)
    cpus = LoadPool.cpus(args)
    api_each = max(2, args.api_connections // n)
    procs: list[LoadProcess] = []
    pool = LoadPool(procs, args.phase_timeout + 60)
    try:
        for i, share in enumerate(split_evenly(tunnels, n)):
            log_path = work / f"load-{i}.log"
            cmd = [sys.executable, str(Path(__file__).resolve()), "load-worker"]
            if args.client_netns:
                local = netns.client_address(i)
                cmd = netns.exec_prefix() + cmd
            else:
                local = f"127.0.0.{2 + i}" if HOST == "127.0.0.1" and i < 250 else ""
            cmd += ["--index", str(i), "--cpu", str(cpus[i % len(cpus)])]
            cmd += ["--local-host", local, "--api-connections", str(api_each)]
            cmd += ["--broker-host", HOST]
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    cwd=REPO_ROOT,
                    limit=2**24,  # replies carry per-client timings
                    start_new_session=True,  # Ctrl-C reaches the bench, which stops them
                )
            procs.append(LoadProcess(i, proc, log_path, cpus[i % len(cpus)], share))
        hellos = await pool.call("hello", timeout=60)
        for lp, hello in zip(procs, hellos, strict=True):
            if hello["nofile"] < lp.share + FD_HEADROOM:
                raise RuntimeError(
                    f"load process {lp.index} may hold {hello['nofile']:,} file descriptors, "
                    f"too few for {lp.share:,} tunnels: use more --client-processes"
                )
        yield pool
    finally:
        await pool.stop()


@dataclass
class OpenReport:
    """What opening tunnels through a :class:`LoadPool` cost, in two sub-phases: every
    POST /v1/tunnels first, then every WebSocket connect."""

    requested: int
    created: int = 0
    opened: int = 0
    per_worker_opened: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    create_s: float = 0.0
    connect_s: float = 0.0
    ready_s: float = 0.0
    broker_create_cpu: float = 0.0
    broker_connect_cpu: float = 0.0
    client_create_cpu: float = 0.0
    client_connect_cpu: float = 0.0
    reported_open: float = 0.0
    reported_source: str = ""

    @property
    def setup_cpu_us(self) -> float:
        if not self.opened:
            return float("nan")
        return (self.broker_create_cpu + self.broker_connect_cpu) / self.opened * 1e6

    def details(self) -> dict[str, Any]:
        nan = float("nan")
        return {
            "tunnels requested": self.requested,
            "connect URLs created (POST /v1/tunnels)": self.created,
            "tunnels opened": self.opened,
            f"broker-reported open ({self.reported_source})": self.reported_open,
            "open errors": dict(self.errors) or 0,
            "time to create all connect URLs (s)": self.create_s,
            "time to connect all (s)": self.connect_s,
            "time until broker reported all (s)": self.ready_s,
            "POST /v1/tunnels per second": self.created / self.create_s if self.create_s else nan,
            "WebSocket connects per second": self.opened / self.connect_s
            if self.connect_s
            else nan,
            "broker CPU per tunnel open (us)": self.setup_cpu_us,
            "  of which POST /v1/tunnels (us)": self.broker_create_cpu / self.created * 1e6
            if self.created
            else nan,
            "  of which WebSocket connect (us)": self.broker_connect_cpu / self.opened * 1e6
            if self.opened
            else nan,
            "client processes' CPU per tunnel open (us)": (
                self.client_create_cpu + self.client_connect_cpu
            )
            / self.opened
            * 1e6
            if self.opened
            else nan,
        }


async def open_with_pool(
    env: BenchEnv, pool: LoadPool, n: int, prefix: str, args: argparse.Namespace
) -> OpenReport:
    """Open ``n`` tunnels spread over ``pool``: all connect URLs first (broker CPU measured
    over that), then all connects (broker CPU measured until it reports them open and the
    ``--settle`` pause has passed, so the tunnel.connected webhooks are in)."""
    broker = env.broker
    rep = OpenReport(n)
    shares = split_evenly(n, len(pool.procs))
    offsets = [sum(shares[:i]) for i in range(len(shares))]
    each = max(1, args.connect_concurrency // len(pool.procs))
    cpu_a, w_a = broker.cpu_seconds(), sum(pool.cpu_seconds())
    t0 = time.perf_counter()
    created = await pool.call(
        "create",
        [
            {"port": broker.port, "prefix": prefix, "start": off, "count": share,
             "concurrency": each, "timeout": args.phase_timeout}
            for off, share in zip(offsets, shares, strict=True)
        ],
    )  # fmt: skip
    t1 = time.perf_counter()
    cpu_b, w_b = broker.cpu_seconds(), sum(pool.cpu_seconds())
    connected = await pool.call("connect", {"concurrency": each, "timeout": args.phase_timeout})
    t2 = time.perf_counter()
    w_c = sum(pool.cpu_seconds())
    for doc in (*created, *connected):
        rep.errors.update(doc["errors"])
        rep.first_errors += doc["first_errors"]
    rep.created = sum(d["created"] for d in created)
    rep.per_worker_opened = [d["opened"] for d in connected]
    rep.opened = sum(rep.per_worker_opened)
    rep.reported_open, rep.reported_source = await wait_for_open(env, rep.opened, 120)
    rep.ready_s = time.perf_counter() - t0
    await asyncio.sleep(args.settle)
    cpu_c = broker.cpu_seconds()
    rep.create_s, rep.connect_s = t1 - t0, t2 - t1
    rep.broker_create_cpu, rep.broker_connect_cpu = cpu_b - cpu_a, cpu_c - cpu_b
    rep.client_create_cpu, rep.client_connect_cpu = w_b - w_a, w_c - w_b
    return rep


def add_open_notes(res: PhaseResult, rep: OpenReport) -> None:
    if rep.errors:
        first = rep.first_errors[0] if rep.first_errors else "-"
        res.notes.append(f"{sum(rep.errors.values())} open errors, first: {first}")
    if rep.opened and rep.reported_open < rep.opened:
        res.notes.append(f"broker reported only {rep.reported_open:.0f} of {rep.opened} open")


def load_cpu_details(
    pool: LoadPool,
    before: Sequence[float],
    after: Sequence[float],
    wall: float,
    parent: tuple[int, float] = (0, 0.0),
) -> tuple[dict[str, Any], float]:
    """Each load process's CPU over a window, and how busy the busiest load CPU was (the
    load processes pinned to it, plus ``parent``: this process's (cpu, utilisation)): the
    numbers that say whether the load side, not the broker, set the pace."""
    util = [(a - b) / wall if wall > 0 else 0.0 for a, b in zip(after, before, strict=True)]
    per_cpu: dict[int, float] = {parent[0]: parent[1]}
    for lp, u in zip(pool.procs, util, strict=True):
        per_cpu[lp.cpu] = per_cpu.get(lp.cpu, 0.0) + u
    busiest = max(per_cpu, key=lambda c: per_cpu[c])
    details = {
        "load processes (CPU each is pinned to)": ", ".join(str(lp.cpu) for lp in pool.procs),
        "load processes' CPU (% of one core each)": " / ".join(f"{100 * u:.0f}" for u in util),
        "load processes' CPU, total (cores)": sum(util),
        f"busiest load CPU ({busiest}), with this process (%)": 100 * per_cpu[busiest],
    }
    return details, per_cpu[busiest]


# --------------------------------------------------------------------------- phase: memory


async def phase_memory(args: argparse.Namespace, work: Path) -> PhaseResult:
    """RSS with 0 tunnels vs. with N idle tunnels (held by load processes); also setup cost
    (API call and connect apart), idle CPU and shutdown time."""
    n = args.tunnels
    res = PhaseResult(f"idle memory: {n:,} tunnels")
    async with bench_env(args, work) as env:
        broker = env.broker
        fd_limit = broker.nofile_limit()
        problem = broker_fd_problem(broker, n)
        if problem:
            res.error = problem
            return res
        # Warm-up: the first tunnels pay one-time costs (imports, pools, first JSON schema
        # compilation) that are not per-tunnel; open and close a few before the baseline.
        warm, warm_errors = await open_raw_tunnels(env, 50, 50, "warm", RawWsStats(), 60)
        if warm_errors:
            res.error = f"warm-up failed: {warm_errors[0]}"
            return res
        await close_raw(warm)
        async with load_pool(args, work, n) as pool:
            await asyncio.sleep(args.settle)
            rss0, uss0 = broker.rss_bytes(), broker.uss_bytes()
            noise = NoiseMeter([broker, env.receiver, *pool.procs])
            noise.start()

            profile = Path(args.py_spy) / "memory-open.txt" if args.py_spy else None
            with py_spy_record(broker.pid, profile, args.load_cpu):
                opened = await open_with_pool(env, pool, n, "u", args)
            rss1, uss1 = broker.rss_bytes(), broker.uss_bytes()

            # Idle cost: with every tunnel open and quiet, how busy is the broker (timers,
            # pings)?
            c_a = broker.cpu_seconds()
            pings_a = sum(d["pings"] for d in await pool.call("stats"))
            await asyncio.sleep(args.idle_seconds)
            stats = await pool.call("stats")
            idle_pings = sum(d["pings"] for d in stats) - pings_a
            idle_cpu = (broker.cpu_seconds() - c_a) / args.idle_seconds
            rss2 = broker.rss_bytes()
            other_cpu = noise.stop()
            hook = webhook_stats(env.receiver)
            shutdown = await env.stop_broker()
            closed = await pool.call("wait_closed", {"timeout": 10})
            pool_procs = len(pool.procs)
        logs = list(env.logs)

    got = opened.opened
    per_tunnel_kb = (rss1 - rss0) / 1024 / got if got else float("nan")
    res.checks += [
        Check("RSS per tunnel", per_tunnel_kb, RSS_PER_TUNNEL_KB, "KB"),
        Check("broker CPU per tunnel setup", opened.setup_cpu_us, SETUP_CPU_US, "us"),
    ]
    close_codes: Counter[str] = Counter()
    for doc in closed:
        close_codes.update(doc["codes"])
    res.details.update(opened.details())
    res.details.update(
        {
            "load processes": pool_procs,
            "broker fd limit": fd_limit or "?",
            "RSS baseline (MB)": rss0 / 2**20,
            "RSS with tunnels (MB)": rss1 / 2**20,
            f"RSS after {args.idle_seconds:g}s idle (MB)": rss2 / 2**20,
            "USS per tunnel (KB)": (uss1 - uss0) / 1024 / got if got else float("nan"),
            "broker idle CPU (% of one core)": idle_cpu * 100,
            "pings received by clients (whole phase)": sum(d["pings"] for d in stats),
            f"pings received during the {args.idle_seconds:g}s idle window": idle_pings,
            "webhook requests / tunnel.connected events": f"{hook.get('requests', 0)} / "
            f"{hook.get('connected', 0)}",
            "other processes' CPU on the host (cores)": other_cpu,
            "broker shutdown with tunnels open (s)": shutdown,
            "client close codes at shutdown": dict(close_codes) or "-",
        }
    )
    add_open_notes(res, opened)
    add_log_notes(res, logs)
    res.notes += busy_host_notes(other_cpu)
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    return res


# --------------------------------------------------------------------------- phase: echo


@dataclass
class EchoState:
    """Receive-side bookkeeping for the echo phase."""

    total: int
    latencies_ns: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    seen: bytearray = field(default_factory=bytearray)
    received: int = 0
    duplicates: int = 0
    warm_received: int = 0
    foreign: int = 0
    last_received: float = 0.0
    closed: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.total)


async def echo_reader(ws: ClientConnection, state: EchoState) -> None:
    """Record the round-trip time of every echoed message (send time travels in the payload)."""
    try:
        async for raw in ws:
            now = time.perf_counter_ns()
            msg = raw.decode() if isinstance(raw, bytes) else raw
            tag, seq_s, ts_s, _ = msg.split(":", 3)
            if tag == "w":
                state.warm_received += 1
                continue
            if tag != "m":
                state.foreign += 1
                continue
            seq = int(seq_s)
            if state.seen[seq]:
                state.duplicates += 1
                continue
            state.seen[seq] = 1
            state.received += 1
            state.latencies_ns.append(now - int(ts_s))
            state.sent_ns.append(int(ts_s))
            state.last_received = time.perf_counter()
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        state.closed[str(code)] += 1
    except ValueError:
        state.foreign += 1


async def paced_send(
    clients: list[ClientConnection], tag: str, count: int, rate: float, pad: str
) -> tuple[float, float]:
    """Open-loop sender: message i is due at start + i/rate, round-robin over the tunnels.

    Open loop (not "send after the previous echo") so that a slow broker shows up as
    latency instead of quietly lowering the offered rate. Returns (first, last) send times.
    """
    n = len(clients)
    start = time.perf_counter()
    sent = 0
    while sent < count:
        now = time.perf_counter()
        due = min(count, int((now - start) * rate) + 1)
        while sent < due:
            ws = clients[sent % n]
            await ws.send(f"{tag}:{sent}:{time.perf_counter_ns()}:{pad}")
            sent += 1
        if sent < count:
            next_due = start + sent / rate
            await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
    return start, time.perf_counter()


async def wait_progress(get: Any, target: int, idle_timeout: float, hard_timeout: float) -> None:
    """Wait until ``get() >= target``, giving up after ``idle_timeout`` s without progress."""
    deadline = time.monotonic() + hard_timeout
    last, last_change = get(), time.monotonic()
    while get() < target and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        cur = get()
        if cur != last:
            last, last_change = cur, time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            break


def write_latency_trace(path: Path, state: EchoState) -> None:
    """CSV of (send time since first send in ms, latency in ms): shows whether the tail comes
    from periodic stalls (GC, sweeps, a blocked loop) or from steady queueing."""
    if not state.sent_ns:
        return
    first = min(state.sent_ns)
    rows = sorted(zip(state.sent_ns, state.latencies_ns, strict=True))
    lines = ["t_ms,latency_ms"] + [f"{(t - first) / 1e6:.3f},{lat / 1e6:.3f}" for t, lat in rows]
    path.write_text("\n".join(lines) + "\n")


async def phase_echo(args: argparse.Namespace, work: Path) -> PhaseResult:
    """``rate`` round trips/s over ``echo_tunnels`` tunnels for ``duration`` seconds, while
    the broker holds ``echo_hold_tunnels`` tunnels in all (the others idle, in load
    processes)."""
    n, rate, duration = args.echo_tunnels, args.rate, args.duration
    hold = max(0, args.echo_hold_tunnels - n)
    total = int(rate * duration)
    title = f"echo: {rate:,}/s round trips over {n} tunnels for {duration:g}s"
    res = PhaseResult(title + (f", {n + hold:,} tunnels open" if hold else ""))
    pad = "x" * max(0, args.payload_bytes - 40)
    state = EchoState(total)
    held: OpenReport | None = None
    async with bench_env(args, work) as env, contextlib.AsyncExitStack() as stack:
        broker = env.broker
        if hold:
            problem = broker_fd_problem(broker, n + hold)
            if problem:
                res.error = problem
                return res
            pool = await stack.enter_async_context(load_pool(args, work, hold))
            held = await open_with_pool(env, pool, hold, "idle", args)
            add_open_notes(res, held)
        clients: list[ClientConnection] = []
        for i in range(n):
            url = await create_tunnel(env.api, f"echo{i}")
            clients.append(
                await ws_connect(
                    url,
                    compression=None,  # like wx.connectSocket's default
                    ping_interval=None,  # the broker pings; client pings would add noise
                    open_timeout=10,
                    close_timeout=3,
                    max_size=2**20,
                )
            )
        readers = [asyncio.create_task(echo_reader(ws, state)) for ws in clients]
        all_open = n + (held.opened if held else 0)
        count, source = await wait_for_open(env, all_open, 30)
        if count < all_open:
            res.notes.append(f"only {count:.0f}/{all_open} tunnels reported open ({source})")

        # Warm-up: establishes the webhook connection pool and any lazy paths.
        warm_count = int(rate * args.warmup)
        if warm_count:
            await paced_send(clients, "w", warm_count, rate, pad)
            await wait_progress(lambda: state.warm_received, warm_count, 3, 10)

        hook0 = webhook_stats(env.receiver)
        cpu0, self0 = broker.cpu_seconds(), self_cpu_seconds()
        rx0 = env.receiver.cpu_seconds()
        noise = NoiseMeter([broker, env.receiver])
        noise.start()
        profile = Path(args.py_spy) / "echo.txt" if args.py_spy else None
        with py_spy_record(broker.pid, profile, args.load_cpu):
            t_start, t_sent = await paced_send(clients, "m", total, rate, pad)
            await wait_progress(lambda: state.received, total, args.drain_timeout, 60)
        t_end = max(state.last_received, t_sent)
        cpu1, self1 = broker.cpu_seconds(), self_cpu_seconds()
        other_cpu = noise.stop()
        rx1 = env.receiver.cpu_seconds()
        hook1 = webhook_stats(env.receiver)
        for ws in clients:
            await ws.close()
        await asyncio.wait(readers, timeout=5)
        for t in readers:
            t.cancel()
        await env.stop_broker()
        logs = list(env.logs)

    if args.latency_trace:
        write_latency_trace(Path(args.latency_trace), state)
        res.notes.append(f"per-message latencies written to {args.latency_trace}")
    lat_ms = sorted(x / 1e6 for x in state.latencies_ns)
    wall = t_end - t_start
    cpu = cpu1 - cpu0
    rts = state.received
    res.checks += [
        Check("broker CPU per round trip", cpu / rts * 1e6 if rts else float("nan"), 150, "us"),
        Check("latency p99", percentile(lat_ms, 99), 25, "ms"),
        Check("round trips completed", rts, total, "msgs", higher_is_better=True),
    ]
    hook_req = hook1.get("requests", 0) - hook0.get("requests", 0)
    hook_ev = hook1.get("events", 0) - hook0.get("events", 0)
    res.details.update(
        {
            "messages sent": total,
            "echoes received": rts,
            "lost": total - rts,
            "duplicates": state.duplicates,
            "offered rate (msg/s)": total / (t_sent - t_start) if t_sent > t_start else 0.0,
            "achieved round trips/s": rts / wall if wall else float("nan"),
            "latency p50 (ms)": percentile(lat_ms, 50),
            "latency p90 (ms)": percentile(lat_ms, 90),
            "latency p99 (ms)": percentile(lat_ms, 99),
            "latency p99.9 (ms)": percentile(lat_ms, 99.9),
            "latency max (ms)": lat_ms[-1] if lat_ms else float("nan"),
            "broker CPU (s)": cpu,
            "broker CPU utilisation (% of one core)": 100 * cpu / wall if wall else 0.0,
            "client process CPU utilisation (%)": 100 * (self1 - self0) / wall if wall else 0.0,
            "webhook receiver CPU utilisation (%)": 100 * (rx1 - rx0) / wall if wall else 0.0,
            "other processes' CPU on the host (cores)": other_cpu,
            "webhook requests": hook_req,
            "events per webhook request (avg)": hook_ev / hook_req if hook_req else 0.0,
            "largest webhook batch": hook1.get("max_batch", 0),
            "client close codes": dict(state.closed) or "-",
        }
    )
    if held is not None:
        res.details.update(
            {
                "idle tunnels held meanwhile (load processes)": held.opened,
                "broker CPU per idle tunnel open (us)": held.setup_cpu_us,
            }
        )
    add_log_notes(res, logs)
    res.notes += busy_host_notes(other_cpu)
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    return res


# --------------------------------------------------------------------------- phase: broadcast


async def loop_stall_probe(env: BenchEnv, out: list[float], stop: asyncio.Event) -> None:
    """GET /healthz every 20 ms on its own connection while broadcasts run.

    Its latency is how long the broker's event loop is unavailable to everyone else (other
    tunnels' messages, API calls, pings) while it fans a message out.
    """
    api = ApiClient(HOST, env.broker.port, API_KEY, max_connections=1)
    try:
        while not stop.is_set() and len(out) < 100_000:
            t = time.perf_counter()
            await api.request("GET", "/healthz")
            out.append((time.perf_counter() - t) * 1e3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    finally:
        await api.aclose()


async def phase_broadcast(args: argparse.Namespace, work: Path) -> PhaseResult:
    """``broadcasts`` POSTs to ``{"all": true}`` with ``tunnels`` clients (in load
    processes) connected; measured until every client in every process got every one."""
    n, k = args.tunnels, args.broadcasts
    res = PhaseResult(f"broadcast: {k} x all to {n:,} tunnels")
    payload = "b" * args.broadcast_bytes
    async with bench_env(args, work) as env:
        broker = env.broker
        problem = broker_fd_problem(broker, n)
        if problem:
            res.error = problem
            return res
        async with load_pool(args, work, n) as pool:
            opened = await open_with_pool(env, pool, n, "u", args)
            got_open = opened.opened
            expected = got_open * k
            post_ms: list[float] = []
            accepted: list[Any] = []
            await pool.call("reset")
            w0 = pool.cpu_seconds()
            cpu0, self0 = broker.cpu_seconds(), self_cpu_seconds()
            split0 = broker.cpu_split()
            noise = NoiseMeter([broker, env.receiver, *pool.procs])
            noise.start()
            profile = Path(args.py_spy) / "broadcast.txt" if args.py_spy else None
            probe_ms: list[float] = []
            probe_stop = asyncio.Event()
            probe = asyncio.create_task(loop_stall_probe(env, probe_ms, probe_stop))
            with py_spy_record(broker.pid, profile, args.load_cpu):
                t0 = time.perf_counter()
                for i in range(k):
                    body = {"messages": [{"to": {"all": True}, "data": f"{i}:{payload}"}]}
                    p0 = time.perf_counter()
                    status, doc = await env.api.request("POST", "/v1/messages", body)
                    post_ms.append((time.perf_counter() - p0) * 1e3)
                    if status != 200:
                        res.notes.append(f"POST /v1/messages -> {status}: {str(doc)[:200]}")
                        break
                    accepted.append(doc.get("accepted") if isinstance(doc, dict) else doc)
                t_posted = time.perf_counter()
                waited = await pool.call(
                    "wait_received",
                    {"per_client": k, "idle_timeout": args.drain_timeout, "hard_timeout": 300},
                    timeout=400,
                )
            probe_stop.set()
            await asyncio.wait([probe], timeout=5)
            got = sum(d["received"] for d in waited)
            t_end = max((d["last_received"] for d in waited if d["received"]), default=0.0)
            t_end = t_end or time.perf_counter()
            cpu1, self1 = broker.cpu_seconds(), self_cpu_seconds()
            # A load process's CPU until it answered (it answers once it has everything).
            w1 = [d["cpu"] for d in waited]
            split1 = broker.cpu_split()
            other_cpu = noise.stop()
            wall = t_end - t0
            parent_util = (self1 - self0) / wall if wall > 0 else 0.0
            load, busiest = load_cpu_details(pool, w0, w1, wall, (args.load_cpu, parent_util))
            await env.stop_broker()
        logs = list(env.logs)

    cpu = cpu1 - cpu0
    broker_util = cpu / wall if wall > 0 else 0.0
    cpu_per = cpu / got if got else float("nan")
    res.checks += [
        Check("deliveries/s (wall clock)", got / wall if wall > 0 else 0.0, DELIVERIES_PER_S,
              "msg/s", True),
        Check("deliveries/s per broker CPU-s", 1 / cpu_per if got else 0.0, DELIVERIES_PER_S,
              "msg/s", True),
        Check("deliveries received", got, expected, "msgs", higher_is_better=True),
    ]  # fmt: skip
    res.details.update(opened.details())
    res.details.update(
        {
            "broadcasts": k,
            "expected deliveries": expected,
            "received deliveries": got,
            "first POST -> last delivery (s)": wall,
            "first POST -> last POST answered (s)": t_posted - t0,
            "POST /v1/messages latency median (ms)": percentile(sorted(post_ms), 50),
            "POST /v1/messages latency max (ms)": max(post_ms) if post_ms else float("nan"),
            "accepted (first response)": accepted[0] if accepted else "-",
            "GET /healthz during broadcasts: p50 (ms)": percentile(sorted(probe_ms), 50),
            "GET /healthz during broadcasts: max (ms)": max(probe_ms, default=float("nan")),
            "broker CPU (s)": cpu,
            "broker CPU per delivery (us)": cpu_per * 1e6,
            "broker CPU user / system (s)": f"{split1[0] - split0[0]:.2f} / "
            f"{split1[1] - split0[1]:.2f}",
            "broker CPU utilisation (% of one core)": 100 * broker_util,
            "this process's CPU utilisation (%)": 100 * parent_util,
            **load,
            "other processes' CPU on the host (cores)": other_cpu,
        }
    )
    add_open_notes(res, opened)
    add_log_notes(res, logs)
    res.notes += busy_host_notes(other_cpu)
    if got and busiest > 0.85 and broker_util < 0.85:
        res.notes.append(
            "the load side was the bottleneck (a load CPU was saturated, the broker's was "
            "not); read 'deliveries/s per broker CPU-s' as the broker's capacity, or add "
            "CPUs to --client-cpus"
        )
    elif got and broker_util > 0.85:
        res.notes.append("the broker's core was saturated: wall-clock rate is the broker's")
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    return res


# --------------------------------------------------------------------------- phase: storm

STORM_GRACE = 1.0  # s a new socket must stay open to count as connected, not refused


def _broker_setting(broker_args: Sequence[str], flag: str, default: float) -> float:
    """The value of ``flag`` among the broker's extra arguments (last wins), else default."""
    value = default
    for i, arg in enumerate(broker_args):
        if arg == flag and i + 1 < len(broker_args):
            value = float(broker_args[i + 1])
        elif arg.startswith(flag + "="):
            value = float(arg.split("=", 1)[1])
    return value


def admission_allowance(args: argparse.Namespace, n: int) -> tuple[int, str]:
    """How many of ``n`` simultaneous connects the documented admission limits let the
    broker refuse (docs/operations.md): those above ``--max-connections`` (503), and 1013
    ``overloaded`` only once the app's webhook buffer is full (``webhook_buffer_events``
    undelivered events; each connect adds one) and ``--connect-wait-seconds`` has passed."""
    max_conn = int(_broker_setting(args.broker_arg, "--max-connections", DEFAULT_MAX_CONNECTIONS))
    limits = dict(item.split("=", 1) for item in args.app_limit)
    buffer = int(limits.get("webhook_buffer_events", DEFAULT_WEBHOOK_BUFFER_EVENTS))
    wait = _broker_setting(args.broker_arg, "--connect-wait-seconds", 10)
    allowed = max(0, n - max_conn) + max(0, n - buffer)
    return allowed, (
        f"max_connections {max_conn:,}, webhook_buffer_events {buffer:,}, "
        f"connect_wait_seconds {wait:g}"
    )


def connects_by_result(broker: ManagedProcess) -> dict[str, int]:
    """The broker's ``tb_connects_total`` by ``result`` label (accepted, overloaded...)."""
    status, body = http_get(f"{broker.base_url}/metrics", timeout=5.0)
    out: Counter[str] = Counter()
    if status != 200:
        return {}
    for line in body.decode(errors="replace").splitlines():
        if not line.startswith("tb_connects_total{"):
            continue
        match = re.search(r'result="([^"]*)"', line)
        with contextlib.suppress(ValueError):
            out[match.group(1) if match else "?"] += int(float(line.rsplit(None, 1)[-1]))
    return dict(out)


def _kernel_setting(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "?"


async def phase_storm(args: argparse.Namespace, work: Path) -> PhaseResult:
    """Open ``tunnels`` tunnels, restart the broker (SIGTERM with ``--drain-seconds 0``, a
    new process on the same port with the same apps file and secret key) and have every
    client reconnect at once with its connect URL; refused or failed connects retry."""
    n = args.tunnels
    res = PhaseResult(f"reconnect storm: {n:,} tunnels reconnecting after a broker restart")
    # Undelivered webhooks at exit (none with a live receiver) wait in the work dir for the
    # next process, not in ~/.local/state.
    extra = ["--drain-seconds", "0", f"--handover-file={work / 'handover.jsonl'}"]
    allowed, limits_text = admission_allowance(args, n)
    async with bench_env(args, work, extra) as env:
        problem = broker_fd_problem(env.broker, n)
        if problem:
            res.error = problem
            return res
        async with load_pool(args, work, n) as pool:
            opened = await open_with_pool(env, pool, n, "u", args)
            rss_before = env.broker.rss_bytes()
            t_term = time.perf_counter()
            shutdown = await env.stop_broker()
            closed = await pool.call("wait_closed", {"timeout": 30})
            startup = await env.restart_broker("broker-restarted")
            t_ready = time.perf_counter()
            broker = env.broker
            rss_ready = broker.rss_bytes()
            cpu0, self0, w0 = broker.cpu_seconds(), self_cpu_seconds(), pool.cpu_seconds()
            noise = NoiseMeter([broker, env.receiver, *pool.procs])
            noise.start()
            profile = Path(args.py_spy) / "storm.txt" if args.py_spy else None
            with py_spy_record(broker.pid, profile, args.load_cpu):
                storm = await pool.call(
                    "reconnect",
                    {
                        "jitter": args.storm_jitter_ms / 1e3,
                        "retry_base": args.storm_retry_ms / 1e3,
                        "retry_cap": args.storm_retry_max_ms / 1e3,
                        "max_attempts": args.storm_max_attempts,
                        "deadline": args.storm_deadline,
                        "grace": STORM_GRACE,
                        "connect_timeout": 10.0,
                        "t_ready": t_ready,
                    },
                    timeout=args.storm_deadline + 120,
                )
            storm_wall = time.perf_counter() - t_ready  # the last reply: all done + grace
            cpu_mid = broker.cpu_seconds()
            w1 = [d["cpu"] for d in storm]
            reconnected = sum(d["connected"] for d in storm)
            count, source = await wait_for_open(env, reconnected, 60)
            await asyncio.sleep(args.settle)
            cpu1, self1 = broker.cpu_seconds(), self_cpu_seconds()
            rss_after = broker.rss_bytes()
            other_cpu = noise.stop()
            results = connects_by_result(broker)
            await env.stop_broker()
        logs = list(env.logs)

    clients = sum(d["clients"] for d in storm)
    connected_at = sorted(t for d in storm for t in d["connected_at"])
    handshake = sorted(t for d in storm for t in d["handshake_ms"])
    attempts: Counter[int] = Counter()
    refused: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    close_codes: Counter[str] = Counter()
    for d in storm:
        attempts.update({int(k): v for k, v in d["attempts"].items()})
        refused.update(d["refused"])
        errors.update(d["errors"])
    for d in closed:
        close_codes.update(d["codes"])
    total_attempts = sum(abs(k) * v for k, v in attempts.items())
    refused_total = sum(refused.values())
    all_connected = connected_at[-1] if connected_at else float("nan")
    cpu = cpu1 - cpu0
    parent_util = (self1 - self0) / storm_wall
    load, _ = load_cpu_details(pool, w0, w1, storm_wall, (args.load_cpu, parent_util))
    res.checks += [
        Check("clients reconnected", reconnected, clients, "tunnels", higher_is_better=True),
        Check("connects refused", refused_total, allowed, "connects"),
        Check("broker CPU per reconnect", cpu / reconnected * 1e6 if reconnected else
              float("nan"), SETUP_CPU_US, "us"),
    ]  # fmt: skip
    res.details.update(opened.details())
    res.details.update(
        {
            "RSS with tunnels before the restart (MB)": rss_before / 2**20,
            "old broker: SIGTERM -> exit (s)": shutdown,
            "client close codes at the restart": dict(close_codes) or "-",
            "new broker: spawn -> ready (s)": startup,
            "clients reconnecting": clients,
            "clients reconnected": reconnected,
            "ready -> 50% connected (s)": percentile(connected_at, 50),
            "ready -> 90% connected (s)": percentile(connected_at, 90),
            "ready -> 99% connected (s)": percentile(connected_at, 99),
            "ready -> all connected (s)": all_connected,
            f"broker-reported open after the storm ({source})": count,
            "SIGTERM -> all connected (s)": t_ready - t_term + all_connected,
            "connect handshake p50 / p99 / max (ms)": f"{percentile(handshake, 50):.1f} / "
            f"{percentile(handshake, 99):.1f} / {handshake[-1] if handshake else float('nan'):.1f}",
            "connect attempts": total_attempts,
            "retries": total_attempts - clients,
            "clients that needed a retry": sum(v for k, v in attempts.items() if abs(k) > 1),
            "most attempts by one client": max((abs(k) for k in attempts), default=0),
            "clients that gave up": sum(v for k, v in attempts.items() if k < 0),
            "refused connects by close code / HTTP status": dict(refused) or 0,
            "failed connects by kind": dict(errors) or 0,
            "broker's tb_connects_total by result": results or "-",
            "admission limits": limits_text,
            "refusals the limits allow": allowed,
            "listen backlog (broker / net.core.somaxconn)": f"{BROKER_BACKLOG} / "
            f"{_kernel_setting('net.core.somaxconn')}",
            "broker CPU, ready -> all open + settle (s)": cpu,
            "broker CPU per reconnect (us)": cpu / reconnected * 1e6 if reconnected else 0.0,
            "broker CPU / time to all connected (% of one core)": 100
            * (cpu_mid - cpu0)
            / all_connected
            if connected_at
            else float("nan"),
            **load,
            "RSS of the new broker at ready (MB)": rss_ready / 2**20,
            "RSS of the new broker after the storm (MB)": rss_after / 2**20,
            "RSS per reconnected tunnel (KB)": (rss_after - rss_ready) / 1024 / reconnected
            if reconnected
            else float("nan"),
            "other processes' CPU on the host (cores)": other_cpu,
            "retry policy": f"jitter {args.storm_jitter_ms:g} ms, backoff "
            f"{args.storm_retry_ms:g}..{args.storm_retry_max_ms:g} ms (equal jitter), "
            f"{args.storm_max_attempts} attempts, {args.storm_deadline:g} s",
        }
    )
    add_open_notes(res, opened)
    first_errors = [e for d in storm for e in d["first_errors"]]
    if first_errors:
        res.notes.append(f"first failed reconnect: {first_errors[0]}")
    add_log_notes(res, logs)
    res.notes += busy_host_notes(other_cpu)
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    return res


# --------------------------------------------------------------------------- main


PHASES = {
    "memory": phase_memory,
    "echo": phase_echo,
    "broadcast": phase_broadcast,
    "storm": phase_storm,
}


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of tunnel counts: {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"not a list of tunnel counts: {text!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("phases (none given = all)")
    g.add_argument("--all", action="store_true", help="run every phase")
    for name in PHASES:
        g.add_argument(f"--{name}", action="store_true", help=f"run the {name} phase")
    p.add_argument(
        "--tunnels", type=int, default=10_000, help="memory/broadcast/storm tunnels (10,000)"
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        metavar="N,N,...",
        help="run the chosen phases once per tunnel count (e.g. 2000,10000): memory, "
        "broadcast and storm with --tunnels N, echo with the broker holding N tunnels",
    )
    p.add_argument(
        "--client-processes",
        type=int,
        default=0,
        metavar="N",
        help="load processes holding the memory/broadcast/storm tunnels (default: enough that "
        f"none holds more than {CLIENTS_PER_PROCESS:,})",
    )
    p.add_argument(
        "--client-cpus",
        metavar="CPU,CPU,...",
        help="CPUs the load processes are pinned to, round-robin (default: --load-cpu)",
    )
    p.add_argument("--broadcasts", type=int, default=20, help="broadcast POSTs")
    p.add_argument("--broadcast-bytes", type=int, default=64, help="broadcast payload size")
    p.add_argument("--echo-tunnels", type=int, default=100)
    p.add_argument(
        "--echo-hold-tunnels",
        type=int,
        default=0,
        metavar="N",
        help="echo: the broker holds N tunnels in all, the ones beyond --echo-tunnels idle "
        "in load processes (default: only the echo tunnels)",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="echo round trips per second")
    p.add_argument("--duration", type=float, default=10.0, help="echo measured seconds")
    p.add_argument("--latency-trace", metavar="CSV", help="echo: write per-message latencies")
    p.add_argument("--warmup", type=float, default=1.0, help="echo warm-up seconds")
    p.add_argument("--payload-bytes", type=int, default=64, help="echo message size")
    s = p.add_argument_group("reconnect storm (--storm)")
    s.add_argument(
        "--storm-jitter-ms",
        type=float,
        default=0.0,
        help="each client waits a random 0..J ms before its first reconnect (default 0: all "
        "at once; the mini-program library waits 250-500 ms after a 1012)",
    )
    s.add_argument(
        "--storm-retry-ms",
        type=float,
        default=500.0,
        help="first wait after a refused or failed reconnect; doubles each attempt, equal "
        "jitter (the mini-program library's reconnectDelay)",
    )
    s.add_argument("--storm-retry-max-ms", type=float, default=5000.0, help="longest wait")
    s.add_argument("--storm-max-attempts", type=int, default=10, help="attempts per client")
    s.add_argument(
        "--storm-deadline", type=float, default=120.0, help="no new attempt after this (s)"
    )
    p.add_argument("--connect-concurrency", type=int, default=200, help="tunnels opening at once")
    p.add_argument("--api-connections", type=int, default=32, help="keep-alive API connections")
    p.add_argument("--settle", type=float, default=3.0, help="pause before RSS readings (s)")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window (s)")
    p.add_argument("--drain-timeout", type=float, default=5.0, help="give up w/o progress (s)")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="max time opening tunnels")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each phase wait up to this long for other processes to go idle (0: off)",
    )
    p.add_argument("--broker-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--client-netns",
        action="store_true",
        help="load processes in a network namespace of their own (bench/netns.py), joined "
        "by a veth pair with each side's receive processing on its own CPU: the broker is "
        "not charged for its clients' TCP receive path, as on loopback (needs root)",
    )
    p.add_argument("--log-level", default="warning", help="broker --log-level")
    p.add_argument(
        "--broker-arg", action="append", default=[], help="extra broker argument (repeatable)"
    )
    p.add_argument(
        "--broker-module", default="tunnel_broker", help="run `python -m MODULE serve ...`"
    )
    p.add_argument(
        "--app-limit",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra [apps.limits] entry, a TOML literal (e.g. webhook_concurrency=1)",
    )
    p.add_argument(
        "--metering",
        choices=("on", "off", "compare"),
        default="on",
        help="the broker's usage metering (--usage-metering): on, off, or compare: the echo "
        "phase --repeat times each way, alternating, with the broker CPU per round trip of "
        "each and the difference. The per-app counters on the hot path count either way "
        "(metrics read them); off stops the meter, which takes and writes them every "
        "--usage-flush-seconds",
    )
    p.add_argument("--repeat", type=int, default=3, help="--metering compare: runs each way")
    p.add_argument("--work-dir", help="where logs/apps file go (default: a temp dir)")
    p.add_argument("--py-spy", metavar="DIR", help="record broker profiles (needs py-spy)")
    p.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write results as JSON ('-'=stdout)"
    )
    args = p.parse_args(argv)
    chosen = [name for name in PHASES if getattr(args, name)]
    args.phases = list(PHASES) if args.all or not chosen else chosen
    if args.metering == "compare":
        args.phases = ["echo"]
    elif args.metering == "off":
        args.broker_arg = ["--usage-metering=false", *args.broker_arg]
    return args


def _metering_runs(args: argparse.Namespace) -> list[tuple[str, str, argparse.Namespace]]:
    """``--metering compare``: the echo phase off, on, on, off, off, on... (alternating,
    and each second pair the other way round, so that neither a host getting busier or
    quieter meanwhile nor whatever the first run of a pair leaves behind weighs on one
    side)."""
    runs = []
    for index in range(1, args.repeat + 1):
        for mode in ("off", "on") if index % 2 else ("on", "off"):
            run_args = argparse.Namespace(**vars(args))
            flag = "true" if mode == "on" else "false"
            run_args.broker_arg = [f"--usage-metering={flag}", *args.broker_arg]
            runs.append((f"echo-metering-{mode}-{index}", "echo", run_args))
    return runs


def metering_summary(results: list[PhaseResult]) -> dict[str, Any]:
    """Broker CPU per echo round trip with metering off and on (median of the runs)."""
    per_mode: dict[str, list[float]] = {"off": [], "on": []}
    for result in results:
        for mode, values in per_mode.items():
            if result.key.startswith(f"echo-metering-{mode}-"):
                values += [
                    c.value
                    for c in result.checks
                    if c.name == "broker CPU per round trip" and c.value == c.value
                ]
    summary: dict[str, Any] = {f"{m} (us per round trip)": v for m, v in per_mode.items()}
    if per_mode["off"] and per_mode["on"]:
        off, on = statistics.median(per_mode["off"]), statistics.median(per_mode["on"])
        summary.update(
            {"median off (us)": off, "median on (us)": on, "cost (%)": 100 * (on - off) / off}
        )
    return summary


def _runs(args: argparse.Namespace) -> list[tuple[str, str, argparse.Namespace]]:
    """(key, phase, arguments) for every run: each phase once, or once per ``--sizes``."""
    if args.metering == "compare":
        return _metering_runs(args)
    if not args.sizes:
        return [(name, name, args) for name in args.phases]
    runs = []
    for size in args.sizes:
        for name in args.phases:
            sized = argparse.Namespace(**vars(args))
            sized.tunnels = size
            if name == "echo":
                sized.echo_hold_tunnels = size
            runs.append((f"{name}@{size}", name, sized))
    return runs


async def run(args: argparse.Namespace, work: Path) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    for key, name, phase_args in _runs(args):
        phase_dir = work / key.replace("@", "-")
        phase_dir.mkdir(parents=True, exist_ok=True)
        if args.wait_quiet > 0:
            busy = await asyncio.to_thread(wait_for_quiet_host, args.wait_quiet)
            if busy >= 0.15:
                print(f"warning: host still busy ({busy:.2f} cores) before {key}; numbers noisy")
        try:
            result = await PHASES[name](phase_args, phase_dir)
        except Exception as exc:  # report and go on to the next phase
            traceback.print_exc()
            result = PhaseResult(key, error=f"{type(exc).__name__}: {exc}")
        result.key = key
        print_phase(result)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load-worker"]:
        return worker_main(argv[1:])
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    pinned = pin_to_cpu(args.load_cpu)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; broker and load share a core", file=sys.stderr)
    biggest = max(args.sizes or [args.tunnels])
    if nofile < biggest + FD_HEADROOM:
        # The broker inherits this limit (it cannot go higher without CAP_SYS_RESOURCE).
        print(
            f"warning: fd limit {nofile:,} < {biggest:,} tunnels + {FD_HEADROOM}: a broker "
            "cannot hold that many (raise `ulimit -Hn` in the starting shell)",
            file=sys.stderr,
        )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = f" sizes={','.join(map(str, args.sizes))}" if args.sizes else ""
    print(
        f"tunnel broker bench: phases={','.join(args.phases)}{sizes} repo={REPO_ROOT} "
        f"python={sys.version.split()[0]} cpus={os.cpu_count()} broker_cpu={args.broker_cpu} "
        f"load_cpu={args.load_cpu} (pinned={pinned}) client_cpus={args.client_cpus or '-'} "
        f"nofile={nofile} logs={work}"
    )
    with contextlib.ExitStack() as stack:
        if args.client_netns:
            most = max(args.client_processes, default_client_processes(biggest))
            stack.enter_context(netns.client_namespace(args.broker_cpu, args.load_cpu, most))
            _use_broker_host(netns.BROKER_ADDRESS)
            print(f"clients in network namespace {netns.NAMESPACE}, broker on {HOST}")
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            results = runner.run(run(args, work))
    metering: dict[str, Any] = {}
    if args.metering == "compare":
        metering = metering_summary(results)
        print()
        print(" usage metering, broker CPU per echo round trip (target: at most 5% more on)")
        for key, value in metering.items():
            shown = ", ".join(f"{v:.1f}" for v in value) if isinstance(value, list) else _fmt(value)
            print(f" {key:<46} {shown:>28}")
    if args.json:
        doc = {
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "results": {r.key or r.name: r.as_dict() for r in results},
        }
        if metering:
            doc["metering"] = metering
        text = json.dumps(doc, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    failed = any(r.error or not all(c.passed for c in r.checks) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Tunnel Broker benchmarks: idle memory per tunnel, echo round trips, broadcast fan-out.

Why these three: they are the costs an operator sizes a node by. Idle memory bounds how many
mini-programs one pod can hold; the echo round trip (client -> broker -> webhook -> broker ->
client) is the hot path of every interactive app; broadcast fan-out is what a live board or a
chat room with many members costs.

Layout (2+ CPUs): the broker alone on CPU 0; this process (client load) and the webhook
receiver on CPU 1. Broker CPU is read from /proc for the broker process tree, so "CPU per round
trip" / "CPU per delivery" are the broker's own costs, independent of how fast the load side is.

    .venv/bin/python bench/broker_bench.py --all                  # full sizes (targets)
    .venv/bin/python bench/broker_bench.py --all --tunnels 1000 --duration 3   # quick
    .venv/bin/python bench/broker_bench.py --echo --json out.json --py-spy /tmp/prof

Each phase starts its own broker and receiver and stops them; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class BenchEnv:
    """One broker + one webhook receiver + an API client, torn down by :func:`bench_env`."""

    broker: ManagedProcess
    receiver: ManagedProcess
    api: ApiClient
    shutdown_seconds: float | None = None

    async def stop_broker(self) -> float:
        """Stop the broker while our clients still run, so they answer its close frames."""
        if self.shutdown_seconds is None:
            self.shutdown_seconds = await asyncio.to_thread(self.broker.stop)
        return self.shutdown_seconds


@contextlib.asynccontextmanager
async def bench_env(args: argparse.Namespace, work: Path) -> AsyncIterator[BenchEnv]:
    receiver = start_webhook_receiver(work, cpu=args.load_cpu)
    broker: ManagedProcess | None = None
    api: ApiClient | None = None
    try:
        extra = dict(item.split("=", 1) for item in args.app_limit)
        apps = write_apps_file(
            work / "apps.toml", f"{receiver.base_url}/webhook", extra_limits=extra
        )
        broker = await asyncio.to_thread(
            start_broker,
            apps,
            work,
            cpu=args.broker_cpu,
            log_level=args.log_level,
            extra_args=args.broker_arg,
            module=args.broker_module,
        )
        api = ApiClient(HOST, broker.port, API_KEY, max_connections=args.api_connections)
        env = BenchEnv(broker=broker, receiver=receiver, api=api)
        yield env
        await env.stop_broker()
    finally:
        if api is not None:
            await api.aclose()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        receiver.stop(5)


async def create_tunnel(api: ApiClient, user_id: str) -> str:
    """POST /v1/tunnels and return the connect_url; raises with the problem detail on error."""
    doc = await api.post("/v1/tunnels", {"user_id": user_id}, expect=201)
    return str(doc["connect_url"])


async def open_raw_tunnels(
    env: BenchEnv, n: int, concurrency: int, prefix: str, stats: RawWsStats, timeout: float
) -> tuple[list[RawWsProtocol], list[str]]:
    """Create and connect ``n`` tunnels (one user each), ``concurrency`` at a time.

    Each worker creates then immediately connects, so no token waits long enough to expire,
    and the API and the upgrade path are exercised interleaved as in real traffic.
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


async def close_raw(clients: list[RawWsProtocol], wait: float = 5.0) -> None:
    """Close handshakes for all clients, then abort whatever is still open after ``wait``."""
    for c in clients:
        c.close()
    pending = [c.closed for c in clients if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=wait)
    for c in clients:
        c.abort()


# --------------------------------------------------------------------------- phase: memory


async def phase_memory(args: argparse.Namespace, work: Path) -> PhaseResult:
    """RSS with 0 tunnels vs. with N idle tunnels; also setup cost and idle CPU."""
    n = args.tunnels
    res = PhaseResult(f"idle memory: {n:,} tunnels")
    stats = RawWsStats()
    async with bench_env(args, work) as env:
        broker = env.broker
        # Warm-up: the first tunnels pay one-time costs (imports, pools, first JSON schema
        # compilation) that are not per-tunnel; open and close a few before the baseline.
        warm, warm_errors = await open_raw_tunnels(env, 50, 50, "warm", RawWsStats(), 60)
        if warm_errors:
            res.error = f"warm-up failed: {warm_errors[0]}"
            return res
        await close_raw(warm)
        await asyncio.sleep(args.settle)
        rss0, uss0 = broker.rss_bytes(), broker.uss_bytes()
        cpu0, self0 = broker.cpu_seconds(), self_cpu_seconds()
        noise = NoiseMeter([broker, env.receiver])
        noise.start()

        profile = Path(args.py_spy) / "memory-open.txt" if args.py_spy else None
        with py_spy_record(broker.pid, profile, args.load_cpu):
            t0 = time.perf_counter()
            clients, errors = await open_raw_tunnels(
                env, n, args.connect_concurrency, "u", stats, args.phase_timeout
            )
            t_open = time.perf_counter() - t0
        self1 = self_cpu_seconds()
        count, source = await wait_for_open(env, len(clients), 120)
        t_ready = time.perf_counter() - t0
        await asyncio.sleep(args.settle)
        cpu1 = broker.cpu_seconds()
        rss1, uss1 = broker.rss_bytes(), broker.uss_bytes()

        # Idle cost: with every tunnel open and quiet, how busy is the broker (timers, pings)?
        c_a, pings_a = broker.cpu_seconds(), stats.pings
        await asyncio.sleep(args.idle_seconds)
        idle_pings = stats.pings - pings_a
        idle_cpu = (broker.cpu_seconds() - c_a) / args.idle_seconds
        rss2 = broker.rss_bytes()
        other_cpu = noise.stop()
        opened = len(clients)
        hook = webhook_stats(env.receiver)
        shutdown = await env.stop_broker()
        await close_raw(clients, 5)

    per_tunnel_kb = (rss1 - rss0) / 1024 / opened if opened else float("nan")
    res.checks.append(Check("RSS per tunnel", per_tunnel_kb, 24, "KB"))
    res.details.update(
        {
            "tunnels requested": n,
            "tunnels opened": opened,
            f"broker-reported open ({source})": count,
            "open errors": len(errors),
            "RSS baseline (MB)": rss0 / 2**20,
            "RSS with tunnels (MB)": rss1 / 2**20,
            f"RSS after {args.idle_seconds:g}s idle (MB)": rss2 / 2**20,
            "USS per tunnel (KB)": (uss1 - uss0) / 1024 / opened if opened else float("nan"),
            "time to create+connect all (s)": t_open,
            "time until broker reported all (s)": t_ready,
            "tunnels opened per second": opened / t_open if t_open else float("nan"),
            "broker CPU per tunnel open (us)": (cpu1 - cpu0) / opened * 1e6
            if opened
            else float("nan"),
            "client CPU per tunnel open (us)": (self1 - self0) / opened * 1e6
            if opened
            else float("nan"),
            "broker idle CPU (% of one core)": idle_cpu * 100,
            "pings received by clients (whole phase)": stats.pings,
            f"pings received during the {args.idle_seconds:g}s idle window": idle_pings,
            "webhook requests / tunnel.connected events": f"{hook.get('requests', 0)} / "
            f"{hook.get('connected', 0)}",
            "other processes' CPU on the host (cores)": other_cpu,
            "broker shutdown with tunnels open (s)": shutdown,
            "client close codes at shutdown": dict(stats.closed) or "-",
        }
    )
    if errors:
        res.notes.append(f"{len(errors)} open errors, first: {errors[0]}")
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    if opened and count < opened:
        res.notes.append(f"broker reported only {count:.0f} of {opened} tunnels open")
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
    """``rate`` round trips/s over ``echo_tunnels`` tunnels for ``duration`` seconds."""
    n, rate, duration = args.echo_tunnels, args.rate, args.duration
    total = int(rate * duration)
    res = PhaseResult(f"echo: {rate:,}/s round trips over {n} tunnels for {duration:g}s")
    pad = "x" * max(0, args.payload_bytes - 40)
    state = EchoState(total)
    async with bench_env(args, work) as env:
        broker = env.broker
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
        count, source = await wait_for_open(env, n, 30)
        if count < n:
            res.notes.append(f"only {count:.0f}/{n} tunnels reported open ({source})")

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
    if other_cpu > 0.1:
        res.notes.append(f"host was busy with other work ({other_cpu:.2f} cores): noisy numbers")
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
    """``broadcasts`` POSTs to ``{"all": true}`` with ``tunnels`` clients connected."""
    n, k = args.tunnels, args.broadcasts
    res = PhaseResult(f"broadcast: {k} x all to {n:,} tunnels")
    stats = RawWsStats()
    payload = "b" * args.broadcast_bytes
    async with bench_env(args, work) as env:
        broker = env.broker
        clients, errors = await open_raw_tunnels(
            env, n, args.connect_concurrency, "u", stats, args.phase_timeout
        )
        opened = len(clients)
        count, source = await wait_for_open(env, opened, 120)
        await asyncio.sleep(args.settle)
        if errors:
            res.notes.append(f"{len(errors)} open errors, first: {errors[0]}")
        expected = opened * k
        stats.received = 0
        post_ms: list[float] = []
        accepted: list[Any] = []
        cpu0, self0 = broker.cpu_seconds(), self_cpu_seconds()
        split0 = broker.cpu_split()
        noise = NoiseMeter([broker, env.receiver])
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
            await wait_progress(lambda: stats.received, expected, args.drain_timeout, 300)
        probe_stop.set()
        await asyncio.wait([probe], timeout=5)
        t_end = stats.last_received if stats.received else time.perf_counter()
        cpu1, self1 = broker.cpu_seconds(), self_cpu_seconds()
        split1 = broker.cpu_split()
        other_cpu = noise.stop()
        await env.stop_broker()
        await close_raw(clients, 5)

    got = stats.received
    wall = t_end - t0
    cpu = cpu1 - cpu0
    client_util = (self1 - self0) / wall if wall > 0 else 0.0
    broker_util = cpu / wall if wall > 0 else 0.0
    cpu_per = cpu / got if got else float("nan")
    res.checks += [
        Check("deliveries/s (wall clock)", got / wall if wall > 0 else 0.0, 50000, "msg/s", True),
        Check("deliveries/s per broker CPU-s", 1 / cpu_per if got else 0.0, 50000, "msg/s", True),
        Check("deliveries received", got, expected, "msgs", higher_is_better=True),
    ]
    res.details.update(
        {
            "tunnels open": opened,
            f"broker-reported open ({source})": count,
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
            "client process CPU utilisation (%)": 100 * client_util,
            "other processes' CPU on the host (cores)": other_cpu,
        }
    )
    if other_cpu > 0.1:
        res.notes.append(f"host was busy with other work ({other_cpu:.2f} cores): noisy numbers")
    if got and client_util > 0.85 and broker_util < 0.85:
        res.notes.append(
            "the client process was the bottleneck (its core was saturated, the broker's "
            "was not); read 'deliveries/s per broker CPU-s' as the broker's capacity"
        )
    elif got and broker_util > 0.85:
        res.notes.append("the broker's core was saturated: wall-clock rate is the broker's")
    if profile is not None:
        res.notes += summarize_py_spy(profile)
    return res


# --------------------------------------------------------------------------- main


PHASES = {"memory": phase_memory, "echo": phase_echo, "broadcast": phase_broadcast}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("phases (none given = all)")
    g.add_argument("--all", action="store_true", help="run memory, echo and broadcast")
    for name in PHASES:
        g.add_argument(f"--{name}", action="store_true", help=f"run the {name} phase")
    p.add_argument("--tunnels", type=int, default=10_000, help="memory/broadcast tunnels")
    p.add_argument("--broadcasts", type=int, default=20, help="broadcast POSTs")
    p.add_argument("--broadcast-bytes", type=int, default=64, help="broadcast payload size")
    p.add_argument("--echo-tunnels", type=int, default=100)
    p.add_argument("--rate", type=float, default=1000.0, help="echo round trips per second")
    p.add_argument("--duration", type=float, default=10.0, help="echo measured seconds")
    p.add_argument("--latency-trace", metavar="CSV", help="echo: write per-message latencies")
    p.add_argument("--warmup", type=float, default=1.0, help="echo warm-up seconds")
    p.add_argument("--payload-bytes", type=int, default=64, help="echo message size")
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
    p.add_argument("--work-dir", help="where logs/apps file go (default: a temp dir)")
    p.add_argument("--py-spy", metavar="DIR", help="record broker profiles (needs py-spy)")
    p.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write results as JSON ('-'=stdout)"
    )
    args = p.parse_args(argv)
    chosen = [name for name in PHASES if getattr(args, name)]
    args.phases = list(PHASES) if args.all or not chosen else chosen
    return args


async def run(args: argparse.Namespace, work: Path) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    for name in args.phases:
        phase_dir = work / name
        phase_dir.mkdir(parents=True, exist_ok=True)
        if args.wait_quiet > 0:
            busy = await asyncio.to_thread(wait_for_quiet_host, args.wait_quiet)
            if busy >= 0.15:
                print(f"warning: host still busy ({busy:.2f} cores) before {name}; numbers noisy")
        try:
            result = await PHASES[name](args, phase_dir)
        except Exception as exc:  # report and go on to the next phase
            traceback.print_exc()
            result = PhaseResult(name, error=f"{type(exc).__name__}: {exc}")
        result.key = name
        print_phase(result)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    pinned = pin_to_cpu(args.load_cpu)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; broker and load share a core", file=sys.stderr)
    if nofile < args.tunnels + 500:
        print(f"warning: fd limit {nofile} < tunnels + 500", file=sys.stderr)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"tunnel broker bench: phases={','.join(args.phases)} repo={REPO_ROOT} "
        f"python={sys.version.split()[0]} cpus={os.cpu_count()} broker_cpu={args.broker_cpu} "
        f"load_cpu={args.load_cpu} (pinned={pinned}) nofile={nofile} logs={work}"
    )
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        results = runner.run(run(args, work))
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

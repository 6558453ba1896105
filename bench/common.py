"""Shared plumbing for the broker benchmarks.

The benchmarks measure the broker, so everything around it is arranged to stay out of its way:

* the broker runs as a subprocess pinned to one CPU (``BROKER_CPU``) so its CPU time and RSS are
  its own and the per-core numbers mean something;
* the webhook receiver runs in another process pinned to the load CPU (``LOAD_CPU``) and is a raw
  asyncio + httptools server, because a framework-based receiver would cost more per batch than
  the broker does and become the bottleneck;
* the client load (this process) is pinned to the load CPU too, and the many-connections
  phases use :class:`RawWsProtocol`, a minimal WebSocket client that only counts frames, so that
  10,000 sockets and 50,000+ deliveries/s fit on one core.

Run ``python bench/common.py webhook-receiver --port P`` to start the receiver by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
API_KEY = "tbk_bench_0123456789abcdef"
APP_ID = "bench"
BROKER_CPU = 0
LOAD_CPU = 1


# --------------------------------------------------------------------------- process setup


def raise_nofile_limit(wanted: int = 1 << 20) -> int:
    """Raise RLIMIT_NOFILE so 10,000 sockets per process do not hit the default soft limit.

    The soft limit goes to the hard limit; as root we also try to lift the hard limit (up to
    ``wanted``), since the broker and the client each hold one fd per tunnel plus pools.
    Returns the resulting soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target_hard = hard
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        target_hard = wanted
    for new_hard in (target_hard, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
            return new_hard
        except (ValueError, OSError):
            continue
    return soft


def pin_to_cpu(cpu: int) -> bool:
    """Pin the calling process to ``cpu`` if the machine has it; returns whether it did.

    Pinning keeps broker CPU and load CPU apart, so the broker's numbers are not muddied by the
    load generator competing for the same core.
    """
    try:
        if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def _child_setup(cpu: int) -> Callable[[], None]:
    """Build a ``preexec_fn`` that pins and raises limits before exec, so they are inherited."""

    def setup() -> None:
        pin_to_cpu(cpu)
        raise_nofile_limit()
        # Own process group: SIGINT to the bench (Ctrl-C) must not reach the broker before we
        # have read its final numbers; we stop it ourselves.
        os.setpgid(0, 0)

    return setup


def free_port() -> int:
    """Ask the kernel for a free loopback port (racy in theory, fine on a quiet bench host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Blocking GET used for health polling; returns (status, body) or (0, b"") on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return 0, b""


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` passes; bounded so nothing hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


# --------------------------------------------------------------------------- apps file


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def write_apps_file(
    path: Path,
    webhook_url: str,
    *,
    app_id: str = APP_ID,
    api_key: str = API_KEY,
    max_message_bytes: int = 131072,
    messages_per_second: int = 1000,
    max_tunnels_per_user: int = 100000,
    extra_limits: dict[str, str] | None = None,
) -> Path:
    """Write a one-app TOML apps file with limits high enough not to throttle the load."""
    text = (
        "[[apps]]\n"
        f'id = "{app_id}"\n'
        f'api_keys = ["{api_key}"]\n'
        f'webhook_url = "{webhook_url}"\n'
        f'webhook_secrets = ["{new_webhook_secret()}"]\n'
        "[apps.limits]\n"
        f"max_message_bytes = {max_message_bytes}\n"
        f"messages_per_second = {messages_per_second}\n"
        f"max_tunnels_per_user = {max_tunnels_per_user}\n"
    )
    # Values are TOML literals as given (numbers, true/false, "quoted strings").
    text += "".join(f"{k} = {v}\n" for k, v in (extra_limits or {}).items())
    path.write_text(text)
    path.chmod(0o600)  # it holds keys: the broker warns (in its log) about a readable one
    return path


# --------------------------------------------------------------------------- processes


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@dataclass
class ManagedProcess:
    """A child process we started; measured through psutil and stopped with SIGTERM."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _tree(self) -> list[psutil.Process]:
        """The process and any children (a broker might fork workers; count them all)."""
        try:
            proc = psutil.Process(self.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def uss_bytes(self) -> int:
        """Unique set size: RSS minus shared pages (libraries), closer to 'what this costs'."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_full_info().uss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU seconds consumed so far by the process tree."""
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds: a high system share means syscalls (one send per frame)."""
        user = system = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                user += t.user
                system += t.system
        return user, system

    def num_threads(self) -> int:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.num_threads()
        return total

    def nofile_limit(self) -> int:
        """The process's soft RLIMIT_NOFILE: how many sockets it can hold (0: unknown)."""
        try:
            soft, _ = psutil.Process(self.pid).rlimit(psutil.RLIMIT_NOFILE)
            return int(soft)
        except (psutil.Error, AttributeError, OSError):
            return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns seconds taken to exit.

        The time is worth reporting: a broker with 10,000 tunnels must close them all (1012)
        on shutdown, and a slow drain shows up here.
        """
        if self.popen.poll() is not None:
            return 0.0
        start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
            return float("inf")
        # Reap any workers left behind in the group we created.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return time.monotonic() - start


def _spawn(
    name: str, cmd: Sequence[str], cpu: int, log_dir: Path, port: int, env: dict[str, str]
) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    log = log_path.open("wb")
    try:
        popen = subprocess.Popen(  # fixed argv, no shell
            list(cmd),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_child_setup(cpu),  # single-threaded at spawn
        )
    finally:
        log.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path, port=port)


def start_broker(
    apps_file: Path,
    log_dir: Path,
    *,
    cpu: int = BROKER_CPU,
    log_level: str = "warning",
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
    python: str = sys.executable,
    module: str = "tunnel_broker",
    port: int | None = None,
    secret_key: str | None = None,
    name: str = "broker",
) -> ManagedProcess:
    """Start ``python -m tunnel_broker serve`` on a free port, pinned to ``cpu``, and wait for it.

    Readiness is /healthz answering 200 and then /readyz answering 200 (or at least anything,
    for brokers that do not implement it yet), so the first measured request does not race
    startup. A restart (the reconnect storm) passes the previous ``port`` and ``secret_key``
    so that connect URLs signed by the old process stay valid, and another ``name`` so each
    process keeps its own log.
    """
    port = port or free_port()
    secret_key = secret_key or secrets.token_urlsafe(32)
    cmd = [
        python,
        "-m",
        module,
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--public-url",
        f"http://{HOST}:{port}",
        "--apps-file",
        str(apps_file),
        "--backend",
        "memory",
        # One argument with "=": a key starting with "-" must not read as a flag.
        f"--secret-key={secret_key}",
        "--log-level",
        log_level,
        *extra_args,
    ]
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    broker = _spawn(name, cmd, cpu, log_dir, port, env)

    def healthy() -> bool:
        if not broker.alive():
            return True  # stop waiting; reported below
        return http_get(f"{broker.base_url}/healthz", timeout=1.0)[0] == 200

    ok = wait_until(healthy, startup_timeout, 0.1)
    if not broker.alive() or not ok:
        broker.stop(5)
        code = broker.popen.returncode
        why = f"exited with {code}" if code is not None else f"not healthy in {startup_timeout}s"
        raise RuntimeError(f"broker {why}; log tail:\n{broker.log_tail()}")
    wait_until(lambda: http_get(f"{broker.base_url}/readyz")[0] == 200, 10.0, 0.1)
    return broker


def start_webhook_receiver(
    log_dir: Path, *, cpu: int = LOAD_CPU, python: str = sys.executable
) -> ManagedProcess:
    """Start the echoing webhook receiver (this file, run as a script) pinned to ``cpu``."""
    port = free_port()
    cmd = [python, str(Path(__file__).resolve()), "webhook-receiver", "--port", str(port)]
    cmd += ["--host", HOST]
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = _spawn("webhook", cmd, cpu, log_dir, port, env)
    ok = wait_until(
        lambda: (not proc.alive()) or http_get(f"{proc.base_url}/stats")[0] == 200, 15.0
    )
    if not ok or not proc.alive():
        proc.stop(5)
        raise RuntimeError(f"webhook receiver failed to start; log:\n{proc.log_tail()}")
    return proc


def webhook_stats(receiver: ManagedProcess) -> dict[str, int]:
    """Counters from the receiver (requests, events by type, largest batch)."""
    status, body = http_get(f"{receiver.base_url}/stats")
    if status != 200:
        return {}
    return {str(k): int(v) for k, v in json.loads(body).items()}


# --------------------------------------------------------------------------- host noise


def _host_busy_seconds() -> float:
    t = psutil.cpu_times()
    return (
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
        # steal: the hypervisor gave our vCPU to someone else, which is noise too
        + getattr(t, "steal", 0.0)
    )


class CpuSource(Protocol):
    """Anything whose CPU use we can read: a :class:`ManagedProcess`, a load worker."""

    def cpu_seconds(self) -> float: ...


class NoiseMeter:
    """CPU used by processes other than ours during a window, in cores.

    On a shared 2-CPU host, a test suite running next to the bench takes CPU from the broker
    and shows up as latency spikes; this number tells a clean run from a noisy one.
    """

    def __init__(self, procs: Sequence[CpuSource]) -> None:
        self.procs = procs
        self._start = (0.0, 0.0, 0.0)

    def _own(self) -> float:
        me = psutil.Process().cpu_times()
        return me.user + me.system + sum(p.cpu_seconds() for p in self.procs)

    def start(self) -> None:
        self._start = (time.monotonic(), _host_busy_seconds(), self._own())

    def stop(self) -> float:
        t0, busy0, own0 = self._start
        wall = time.monotonic() - t0
        if wall <= 0:
            return 0.0
        other = (_host_busy_seconds() - busy0) - (self._own() - own0)
        return max(0.0, other / wall)


def wait_for_quiet_host(max_wait: float, threshold: float = 0.15, quiet_for: int = 3) -> float:
    """Wait (at most ``max_wait`` s) until the host's busy CPU stays under ``threshold`` cores
    for ``quiet_for`` consecutive seconds; call when our own processes are idle. Returns the
    last one-second reading (in cores)."""
    deadline = time.monotonic() + max_wait
    streak, reading = 0, 0.0
    while True:
        b0, t0 = _host_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        reading = (_host_busy_seconds() - b0) / (time.monotonic() - t0)
        streak = streak + 1 if reading < threshold else 0
        if streak >= quiet_for or time.monotonic() >= deadline:
            return reading


# --------------------------------------------------------------------------- metrics


def parse_metric(text: str, name: str) -> float | None:
    """Sum every sample of the Prometheus metric ``name`` (all label sets); None if absent."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if not rest or rest[0] not in " {":
            continue
        try:
            total += float(line.rsplit(None, 1)[-1])
            found = True
        except ValueError:
            continue
    return total if found else None


def broker_metric(broker: ManagedProcess, name: str) -> float | None:
    status, body = http_get(f"{broker.base_url}/metrics", timeout=5.0)
    if status != 200:
        return None
    return parse_metric(body.decode(errors="replace"), name)


# --------------------------------------------------------------------------- API client


class ApiError(RuntimeError):
    """A non-2xx answer from the broker API (status and the start of the body)."""


class ApiClient:
    """A minimal HTTP/1.1 keep-alive JSON client for the broker's API.

    Why not httpx: its connection pool scans every connection per request and its anyio
    layer retries failed imports per connection; profiled here it cost ~5-10 ms of client CPU
    per tunnel with 200 concurrent requests, so opening 10,000 tunnels measured httpx instead
    of the broker. This client pools raw asyncio streams and does nothing else.
    """

    def __init__(
        self, host: str, port: int, api_key: str, max_connections: int = 64, timeout: float = 30
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._auth = f"Bearer {api_key}"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON or text)."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: {self._auth}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        async with self._slots, asyncio.timeout(self.timeout):
            for attempt in range(2):
                conn, reused = self._checkout()
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                try:
                    writer.write(head + payload)
                    status, keep, data = await self._read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    writer.close()
                    # The server may close an idle keep-alive connection (uvicorn: 5 s) just
                    # as we reuse it; it never read the request, so one retry is safe.
                    if (
                        reused
                        and attempt == 0
                        and not (isinstance(exc, asyncio.IncompleteReadError) and exc.partial)
                    ):
                        continue
                    raise
                except BaseException:
                    writer.close()
                    raise
                break
            if keep:
                self._idle.append(conn)
            else:
                writer.close()
        text = data.decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    async def post(self, path: str, body: Any, expect: int = 200) -> Any:
        """POST and return the decoded body; raises :class:`ApiError` on another status."""
        status, doc = await self.request("POST", path, body)
        if status != expect:
            raise ApiError(f"POST {path} -> {status}: {str(doc)[:300]}")
        return doc

    def _checkout(
        self,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        """An idle pooled connection that the server has not closed, if any."""
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            return (reader, writer), True
        return None, False

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip().lower()
        keep = headers.get("connection") != "close"
        if "content-length" in headers:
            return status, keep, await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            return status, keep, b"".join(parts)
        return status, False, await reader.read()

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


# --------------------------------------------------------------------------- raw WS client

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


@dataclass
class RawWsStats:
    """Counters shared by all raw clients of one run (one object, no per-message allocation)."""

    received: int = 0
    received_bytes: int = 0
    last_received: float = 0.0
    pings: int = 0
    closed: Counter[int] = field(default_factory=Counter)
    lost: int = 0


class RawWsProtocol(asyncio.Protocol):
    """A minimal RFC 6455 client that handshakes, answers pings/closes and counts messages.

    Why not the ``websockets`` client here: with 10,000 sockets and 50,000+ messages/s in one
    process on one core, its per-connection reader task and per-frame machinery cost about as
    much as the broker does, so the bench would measure itself. This class does the least a
    well-behaved client must (pong, close handshake) and counts completed data messages.
    It never compresses, as WeChat's ``wx.connectSocket`` does not by default.
    """

    def __init__(self, host_header: str, target: str, stats: RawWsStats) -> None:
        self.stats = stats
        self._key = base64.b64encode(secrets.token_bytes(16))
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._upgraded = False
        self._close_sent = False

    # asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; cast, do not assert.
        self.transport = cast(asyncio.Transport, transport)
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.stats.lost += 1
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._finish_handshake(bytes(buf[:end]))
            del buf[: end + 4]
            if not self._upgraded:
                return
        self._parse_frames()

    # internals ---------------------------------------------------------------------------
    def _finish_handshake(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        expected = base64.b64encode(
            hashlib.sha1(self._key + _WS_GUID).digest()
        )  # RFC 6455 mandates SHA-1
        accept = b""
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"sec-websocket-accept":
                accept = v.strip()
        if len(status) < 2 or status[1] != b"101" or accept != expected:
            err = ConnectionError(f"handshake failed: {lines[0]!r}")
            if not self.opened.done():
                self.opened.set_exception(err)
            assert self.transport is not None
            self.transport.close()
            return
        self._upgraded = True
        if not self.opened.done():
            self.opened.set_result(None)

    def _parse_frames(self) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        stats = self.stats
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:
                head += 4  # servers must not mask, but tolerate it
            end = pos + head + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode < 0x8:
                if b0 & 0x80:  # FIN: a whole message (text, binary or last continuation)
                    stats.received += 1
                    stats.received_bytes += length
            elif opcode == 0x9:
                stats.pings += 1
                self._send_frame(0xA, bytes(buf[pos + head : end]))
            elif opcode == 0x8:
                payload = bytes(buf[pos + head : end])
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._on_close(code, payload[:2])
            pos = end
        if pos:
            del buf[:pos]
        if pos and stats.received:
            stats.last_received = time.perf_counter()

    def _on_close(self, code: int, echo: bytes) -> None:
        self.stats.closed[code] += 1
        if not self.closed.done():
            self.closed.set_result(code)
        if not self._close_sent:
            self._send_frame(0x8, echo)
            self._close_sent = True
        if self.transport is not None:
            self.transport.close()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        # Control frames are < 126 bytes by RFC 6455, so the short length form is enough.
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def close(self, code: int = 1000) -> None:
        """Start the close handshake; the transport closes when the server echoes it."""
        if not self._close_sent:
            self._send_frame(0x8, code.to_bytes(2, "big"))
            self._close_sent = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def raw_ws_connect(
    url: str, stats: RawWsStats, timeout: float = 10.0, local_host: str | None = None
) -> RawWsProtocol:
    """Open ``url`` (ws://) with :class:`RawWsProtocol`; raises if the upgrade fails.

    ``local_host`` binds the client end to that address (another 127.x.y.z): one source
    address has only the ephemeral port range (~28,000 ports) towards one broker port, so
    load processes holding 50,000 tunnels between them each use their own. The port is
    chosen at connect time (IP_BIND_ADDRESS_NO_PORT): a plain bind to port 0 draws from
    half the range only and gets slower as it fills (~700 us of client CPU a socket at
    4,000 sockets).
    """
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"only ws:// is supported by the bench client, got {url!r}")
    host = parts.hostname or HOST
    port = parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    host_header = parts.netloc
    proto: RawWsProtocol | None = None

    def factory() -> RawWsProtocol:
        nonlocal proto
        proto = RawWsProtocol(host_header, target, stats)
        return proto

    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout):
            if local_host:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.setblocking(False)
                sock.bind((local_host, 0))
                await loop.sock_connect(sock, (host, port))
                await loop.create_connection(factory, sock=sock)
            else:
                await loop.create_connection(factory, host, port)
            assert proto is not None
            await proto.opened
    except BaseException:
        if proto is not None:  # timed out mid-handshake: do not leak the socket
            proto.abort()
        elif sock is not None:
            sock.close()
        raise
    return proto


def busy_host_notes(other_cores: float) -> list[str]:
    """A phase's note when other processes used the host meanwhile (more than a tenth of
    a core): its numbers are noisy."""
    if other_cores > 0.1:
        return [f"host was busy with other work ({other_cores:.2f} cores): noisy numbers"]
    return []


# --------------------------------------------------------------------------- webhook receiver


@dataclass
class _ReceiverCounters:
    requests: int = 0
    events: int = 0
    connected: int = 0
    message: int = 0
    closed: int = 0
    other: int = 0
    actions: int = 0
    max_batch: int = 0
    bad_requests: int = 0


def build_webhook_response(body: bytes, counters: _ReceiverCounters) -> bytes:
    """Echo every ``tunnel.message`` back to its tunnel as a ``send`` action; ack the rest.

    The target is named explicitly rather than relying on "defaults to the event's tunnel",
    because a batch mixes events from many tunnels.
    """
    events = json.loads(body).get("events", [])
    counters.requests += 1
    counters.events += len(events)
    counters.max_batch = max(counters.max_batch, len(events))
    actions: list[dict[str, Any]] = []
    for ev in events:
        kind = ev.get("type")
        if kind == "tunnel.message":
            counters.message += 1
            action: dict[str, Any] = {"type": "send", "to": {"tunnels": [ev["tunnel_id"]]}}
            if "data" in ev and ev["data"] is not None:
                action["data"] = ev["data"]
            else:
                action["data_base64"] = ev.get("data_base64", "")
            actions.append(action)
        elif kind == "tunnel.connected":
            counters.connected += 1
        elif kind == "tunnel.closed":
            counters.closed += 1
        else:
            counters.other += 1
    counters.actions += len(actions)
    if not actions:
        return b'{"actions":[]}'
    return json.dumps({"actions": actions}, separators=(",", ":")).encode()


class _WebhookHttpProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive server on httptools: the cheapest correct thing we can run."""

    def __init__(self, counters: _ReceiverCounters) -> None:
        import httptools

        self.counters = counters
        self.parser = httptools.HttpRequestParser(self)
        self._parser_error = httptools.HttpParserError
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; cast, do not assert.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self._parser_error:
            self.counters.bad_requests += 1
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, self._url = self._url, b""
        body = b"".join(self._body)
        self._body = []
        method = self.parser.get_method()
        status = b"200 OK"
        if method == b"POST":
            try:
                payload = build_webhook_response(body, self.counters)
            except (ValueError, KeyError, AttributeError):
                self.counters.bad_requests += 1
                status, payload = b"400 Bad Request", b"{}"
        elif url.startswith(b"/stats"):
            payload = json.dumps(self.counters.__dict__).encode()
        else:
            payload = b'{"ok":true}'
        keep = self.parser.should_keep_alive()
        head = (
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + (b"\r\n\r\n" if keep else b"\r\nConnection: close\r\n\r\n")
        )
        assert self.transport is not None
        self.transport.write(head + payload)
        if not keep:
            self.transport.close()


async def _serve_webhooks(port: int, duration_limit: float) -> None:
    counters = _ReceiverCounters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _WebhookHttpProtocol(counters), HOST, port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        # Bounded even if the parent dies without signalling us.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration_limit)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available: the load side must be as cheap as we can make it."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _main(argv: Sequence[str] | None = None) -> None:
    global HOST
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rx = sub.add_parser("webhook-receiver", help="run the echoing webhook receiver")
    rx.add_argument("--port", type=int, required=True)
    rx.add_argument("--host", default=HOST, help="address to listen on")
    rx.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    if args.cmd == "webhook-receiver":
        HOST = args.host
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve_webhooks(args.port, args.max_seconds))


if __name__ == "__main__":
    _main()

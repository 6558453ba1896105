"""Real servers on loopback for tests: uvicorn in-process, or the broker as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port that stays ours until a server binds it.

    Ports come from below the kernel's ephemeral range: a port the kernel handed out
    by `bind(0)` is also what it hands to outgoing connections, so under the fault
    tests' thousands of sockets a client could take it before the broker bound it
    (CI saw "address already in use" starting a pod).
    """
    low, high = _ephemeral_range()
    candidates = (10000, low) if low > 11000 else (high + 1, 65535)
    for _ in range(200):
        port = random.randrange(*candidates)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


@contextlib.asynccontextmanager
async def run_uvicorn(app: Any, port: int | None = None) -> AsyncIterator[int]:
    """Serve an ASGI app on 127.0.0.1 in this event loop; yields the port."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_apps_file(path: Path, apps: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(apps))
    return path


class BrokerProcess:
    """``python -m tunnel_broker serve`` as a child process, for tests of the real CLI,
    signals and process lifecycle."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "tunnel_broker",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.extra_args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: a chatty broker must never block on a full pipe.
        fd, name = tempfile.mkstemp(prefix="broker-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    async def start(self, timeout: float = 20.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"broker exited: {self.read_output()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("broker did not become healthy")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("broker did not exit in time")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def read_output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

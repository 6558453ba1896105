"""The floor under a broadcast: the least CPU Python on uvloop spends per delivery.

Why: issue #16 asks for 100,000 deliveries/s broadcasting to 10,000 tunnels, or a profile
that shows why it cannot go lower in Python. perf says ~70% of a delivery is the kernel's
per-socket TCP work; this measures the rest's floor directly. One process, pinned to the
broker's core, holds ``--sockets`` real loopback TCP connections (the far ends in
``--readers`` processes on the load core, reading everything) and writes the same small
WebSocket frame to every one, ``--rounds`` times, in slices of 500 with a yield to the
loop between slices, exactly as the broker's push loop does, but with nothing else: no
tunnel, no checks, no lookup. Two ways of writing:

- ``transport``: ``transport.write(frame)`` for each socket (what the broker calls);
- ``os.write``: ``os.write(fd, frame)`` on the socket's descriptor, the least Python can
  do per socket (one C call into the system call).

It prints the writer's CPU per delivery (user and system) and the rates. Compare with
``broker CPU per delivery`` from ``bench/broker_bench.py --broadcast`` in the same hour
(this machine's speed drifts)::

    .venv/bin/python bench/write_floor.py --sockets 10000 --rounds 20
    .venv/bin/python bench/broker_bench.py --broadcast --tunnels 10000 --client-processes 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BROKER_CPU,
    HOST,
    LOAD_CPU,
    free_port,
    new_event_loop,
    pin_to_cpu,
    raise_nofile_limit,
)

from tunnel_broker.tunnels.frames import encode
from tunnel_broker.tunnels.hub import PUSH_SLICE

HARD_TIMEOUT = 300.0  # every wait is bounded


def round_frame(r: int) -> bytes:
    """Round ``r``'s frame: the broker bench's broadcast payload, encoded as the broker does."""
    return encode(f"{r}:" + "b" * 64)


# --------------------------------------------------------------------------- reader side


class _Counting(asyncio.Protocol):
    def __init__(self, total: list[int]) -> None:
        self.total = total

    def data_received(self, data: bytes) -> None:
        self.total[0] += len(data)


async def _read(port: int, sockets: int, phase_bytes: int, phases: int) -> None:
    """Open ``sockets`` connections, say so, then say when each phase's bytes are in."""
    loop = asyncio.get_running_loop()
    total = [0]
    for _ in range(sockets):
        await loop.create_connection(lambda: _Counting(total), HOST, port)
    print("connected", flush=True)
    deadline = time.monotonic() + HARD_TIMEOUT
    for phase in range(1, phases + 1):
        while total[0] < phase * phase_bytes:
            if time.monotonic() > deadline:
                print(json.dumps({"error": f"timed out with {total[0]} bytes"}), flush=True)
                return
            await asyncio.sleep(0.002)
        print(json.dumps({"phase": phase, "at": time.time()}), flush=True)


# --------------------------------------------------------------------------- writer side


class _Held(asyncio.Protocol):
    def __init__(self, held: list[asyncio.Transport]) -> None:
        self.held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.held.append(cast(asyncio.Transport, transport))  # uvloop's is not a subclass


def _by_transport(transports: list[asyncio.Transport]) -> Callable[[int, int, bytes], None]:
    def write(start: int, stop: int, data: bytes) -> None:
        for transport in transports[start:stop]:
            transport.write(data)

    return write


def _by_os_write(transports: list[asyncio.Transport]) -> Callable[[int, int, bytes], None]:
    fds = [t.get_extra_info("socket").fileno() for t in transports]
    write_fd = os.write

    def write(start: int, stop: int, data: bytes) -> None:
        for fd in fds[start:stop]:
            write_fd(fd, data)

    return write


async def _phase(
    name: str,
    write: Callable[[int, int, bytes], None],
    count: int,
    rounds: int,
    readers: list[asyncio.subprocess.Process],
) -> dict[str, int | float | str]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    for r in range(rounds):
        data = round_frame(r)
        for start in range(0, count, PUSH_SLICE):
            write(start, start + PUSH_SLICE, data)
            await asyncio.sleep(0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    done = [json.loads(await _line(reader)) for reader in readers]
    errors = [d["error"] for d in done if "error" in d]
    if errors:
        raise RuntimeError(f"{name}: a reader {errors[0]}")
    wall = max(d["at"] for d in done) - t0
    deliveries = count * rounds
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    cpu = user + system
    return {
        "method": name,
        "deliveries": deliveries,
        "writer CPU per delivery (us)": cpu / deliveries * 1e6,
        "of which user / system (us)": f"{user / deliveries * 1e6:.2f} / "
        f"{system / deliveries * 1e6:.2f}",
        "deliveries per writer CPU-second": deliveries / cpu if cpu else float("nan"),
        "deliveries/s (wall clock, until read)": deliveries / wall if wall > 0 else 0.0,
    }


async def _line(reader: asyncio.subprocess.Process) -> str:
    assert reader.stdout is not None
    line = await asyncio.wait_for(reader.stdout.readline(), HARD_TIMEOUT)
    if not line:
        raise RuntimeError("a reader process ended early")
    return line.decode()


def _on_load_core() -> None:
    pin_to_cpu(LOAD_CPU)
    raise_nofile_limit()


async def _write(args: argparse.Namespace) -> list[dict[str, int | float | str]]:
    held: list[asyncio.Transport] = []
    loop = asyncio.get_running_loop()
    port = free_port()
    server = await loop.create_server(lambda: _Held(held), HOST, port, backlog=4096)
    methods = {"transport": _by_transport, "os.write": _by_os_write}
    chosen = [m for m in args.methods.split(",") if m]
    unknown = set(chosen) - methods.keys()
    if unknown:
        raise SystemExit(f"unknown method(s): {', '.join(sorted(unknown))}")
    even, extra = divmod(args.sockets, args.readers)
    shares = [even + (i < extra) for i in range(args.readers)]
    readers = []
    round_bytes = sum(len(round_frame(r)) for r in range(args.rounds))
    for share in shares:
        phase_bytes = round_bytes * share
        cmd = [sys.executable, __file__, "reader", "--port", str(port), "--sockets", str(share)]
        cmd += ["--phase-bytes", str(phase_bytes), "--phases", str(len(chosen))]
        readers.append(
            await asyncio.create_subprocess_exec(
                *cmd,
                stdout=subprocess.PIPE,
                preexec_fn=_on_load_core,
            )
        )
    try:
        for reader in readers:
            if (await _line(reader)).strip() != "connected":
                raise RuntimeError("a reader could not connect")
        deadline = time.monotonic() + 30
        while len(held) < args.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if len(held) < args.sockets:
            raise RuntimeError(f"only {len(held)} of {args.sockets} connections arrived")
        await asyncio.sleep(1.0)  # let the connects' softirq work settle
        results = []
        for name in chosen:
            results.append(await _phase(name, methods[name](held), len(held), args.rounds, readers))
            await asyncio.sleep(0.5)
        return results
    finally:
        for reader in readers:
            if reader.returncode is None:
                reader.kill()
            await reader.wait()
        for transport in held:
            transport.abort()
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("role", nargs="?", default="writer", choices=["writer", "reader"])
    p.add_argument("--sockets", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=20, help="frames written to each socket")
    p.add_argument("--readers", type=int, default=4, help="reader processes (load core)")
    p.add_argument("--methods", default="transport,os.write")
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--phase-bytes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--phases", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    raise_nofile_limit()
    loop = new_event_loop()
    if args.role == "reader":
        loop.run_until_complete(_read(args.port, args.sockets, args.phase_bytes, args.phases))
        return
    pin_to_cpu(BROKER_CPU)
    results = loop.run_until_complete(_write(args))
    print(f"{args.sockets:,} sockets, {args.rounds} rounds, slices of {PUSH_SLICE}")
    for result in results:
        print(f"  {result['method']}")
        for key, value in result.items():
            if key != "method":
                print(f"    {key:<42} {_shown(value):>14}")


def _shown(value: int | float | str) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return value


if __name__ == "__main__":
    main()

"""What durable events cost: broker and Redis CPU per echo, durable events on and off.

Starts one ``redis-server`` (no persistence, pinned with the broker to ``--broker-cpu``)
and runs ``broker_bench.py --echo`` against it in Redis mode, alternating
``--durable-events true`` and ``false`` so that drift of the host affects both alike.
Each echo is one client message, hence one webhook event, plus the pushed reply: the
difference between the two is the cost of storing (and deleting) one event.

    .venv/bin/python bench/durable_cost.py            # 3 rounds of 10 s each, ~3 minutes
    .venv/bin/python bench/durable_cost.py --rounds 1 --duration 5

Prints a markdown table (one row a run, then the medians) for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_redis(port: int, cpu: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (Debian: apt-get install redis-server)")
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = subprocess.Popen(["taskset", "-c", str(cpu), *command], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def echo_run(
    args: argparse.Namespace, redis_url: str, durable: bool, out: Path
) -> dict[str, float]:
    command = [
        sys.executable,
        str(HERE / "broker_bench.py"),
        "--echo",
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--broker-cpu",
        str(args.broker_cpu),
        "--load-cpu",
        str(args.load_cpu),
        "--wait-quiet",
        str(args.wait_quiet),
        "--json",
        str(out),
        *(f"--broker-arg={a}" for a in ("--backend", "redis", "--redis-url", redis_url)),
        f"--broker-arg=--durable-events={'true' if durable else 'false'}",
    ]
    # Its exit status says whether its own targets were met: not this script's business.
    out.unlink(missing_ok=True)
    subprocess.run(command, stdout=subprocess.DEVNULL, timeout=args.duration + 240)
    if not out.exists():
        sys.exit(f"broker_bench.py wrote no results: {' '.join(command)}")
    echo = json.loads(out.read_text())["results"]["echo"]
    details = echo["details"]
    return {
        "broker_us": echo["checks"]["broker CPU per round trip"]["value"],
        "p99_ms": details["latency p99 (ms)"],
        "round_trips": details["echoes received"],
        "lost": details["lost"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating")
    p.add_argument("--rate", type=float, default=1000.0, help="echo round trips per second")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--broker-cpu", type=int, default=0, help="CPU of the broker and Redis")
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--wait-quiet", type=float, default=30.0, help="see broker_bench.py")
    args = p.parse_args()

    port = free_port()
    redis = start_redis(port, args.broker_cpu)
    rows: list[tuple[bool, dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory() as work:
            for round_ in range(args.rounds):
                for durable in (True, False):
                    before = cpu_seconds(redis.pid)
                    result = echo_run(
                        args, f"redis://127.0.0.1:{port}/0", durable, Path(work) / "echo.json"
                    )
                    # Redis CPU over the whole run (start, warm-up, measure, stop), per
                    # measured round trip: an upper bound.
                    redis_cpu = cpu_seconds(redis.pid) - before
                    result["redis_us"] = redis_cpu / max(1.0, result["round_trips"]) * 1e6
                    rows.append((durable, result))
                    print(
                        f"round {round_ + 1} durable={durable}: broker {result['broker_us']:.0f} "
                        f"us, redis {result['redis_us']:.0f} us, p99 {result['p99_ms']:.1f} ms",
                        flush=True,
                    )
    finally:
        redis.terminate()
        redis.wait(10)

    print()
    print(f"`{' '.join(sys.argv)}`")
    print()
    print("| durable events | broker CPU per echo | Redis CPU per echo | echo p99 | lost |")
    print("| --- | --- | --- | --- | --- |")
    for durable, r in rows:
        print(
            f"| {'on' if durable else 'off'} | {r['broker_us']:.0f} µs | {r['redis_us']:.0f} µs "
            f"| {r['p99_ms']:.1f} ms | {r['lost']:.0f} |"
        )
    medians = {}
    for durable in (True, False):
        mine = [r for d, r in rows if d is durable]
        medians[durable] = (
            statistics.median(r["broker_us"] for r in mine),
            statistics.median(r["redis_us"] for r in mine),
        )
        print(
            f"| **median {'on' if durable else 'off'}** | {medians[durable][0]:.0f} µs "
            f"| {medians[durable][1]:.0f} µs | | |"
        )
    print()
    print(
        f"storing one event costs the broker {medians[True][0] - medians[False][0]:+.0f} µs "
        f"and Redis {medians[True][1] - medians[False][1]:+.0f} µs (medians, on minus off)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

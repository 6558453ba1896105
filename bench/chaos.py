"""Chaos runner: the full-size fault scenarios of ``tests/support/chaos.py``, one table.

Each scenario runs on a fresh redis-server and a fresh cluster of three broker pods (one of
them reaching Redis through a proxy that can cut it off), with ``--tunnels`` steady
clients sending ``--rate`` numbered messages per second, a business server receiving the
webhooks and pushing ``--push-rate`` API calls per second, and ONE fault. The row says
what the business server got (lost in flight at the fault / otherwise, duplicated with the
same event id / as a new event, order violations, messages outside connected..closed,
unpaired lifecycles), what the clients got of the pushes, and how long until every tunnel
had caught up after the fault. ``tests/faults/test_chaos.py`` runs the same code small.

    .venv/bin/python bench/chaos.py                    # the nine scenarios, full size, 7-11 min
    .venv/bin/python bench/chaos.py --scenario kill_pod --tunnels 100
    .venv/bin/python bench/chaos.py --scenario business_down_60s --duration 20 --json out.json
    .venv/bin/python bench/chaos.py --scenario pod_cut_off_rejected   # extra: refused, not dropped

Every scenario is bounded (``--max-seconds``); processes are stopped on exit, errors and
Ctrl-C. Broker logs are kept (their paths are printed with each scenario's details).
Exit status 1 if any scenario lost a message other than in flight, reordered one,
delivered one outside connected..closed, left a lifecycle unpaired, or failed to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from common import REPO_ROOT, new_event_loop, raise_nofile_limit

sys.path.insert(0, str(REPO_ROOT))

from tests.support.chaos import (
    EXTRA_SCENARIOS,
    SCENARIOS,
    ChaosResult,
    Load,
    run_scenario,
    table,
)
from tests.support.redis_server import RedisServer

# Brokers keep no memory-backend hand-over file between scenarios (as in tests/conftest.py).
os.environ["TB_HANDOVER_FILE"] = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    names = [*SCENARIOS, *EXTRA_SCENARIOS]
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*names, "all"],
        help="scenario to run (repeatable; default all = the nine of the brief)",
    )
    p.add_argument("--tunnels", type=int, default=300, help="steady clients")
    p.add_argument("--rate", type=float, default=5.0, help="messages/s per client")
    p.add_argument("--push-rate", type=float, default=20.0, help="API push calls/s")
    p.add_argument(
        "--duration", type=float, help="fault seconds for every scenario (default: its own)"
    )
    p.add_argument("--warmup", type=float, default=5.0, help="load before the fault (s)")
    p.add_argument("--after-min", type=float, default=5.0, help="load kept after catching up")
    p.add_argument("--after-max", type=float, default=120.0, help="load at most this long after")
    p.add_argument("--settle-timeout", type=float, default=180.0, help="for every tunnel.closed")
    p.add_argument("--max-seconds", type=float, default=900.0, help="hard limit per scenario")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    p.add_argument("--work-dir", help="apps files go here (default: a temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    chosen = args.scenario or ["all"]
    args.scenarios = list(SCENARIOS) if "all" in chosen else list(dict.fromkeys(chosen))
    return args


async def one(name: str, args: argparse.Namespace, work: Path) -> ChaosResult | str:
    """Run one scenario on its own redis-server; an error is returned as text."""
    load = Load(
        tunnels=args.tunnels,
        rate=args.rate,
        push_rate=args.push_rate,
        warmup=args.warmup,
        after_min=args.after_min,
        after_max=args.after_max,
        settle_timeout=args.settle_timeout,
        seed=args.seed,
    )
    scenario = SCENARIOS.get(name) or EXTRA_SCENARIOS[name]
    seconds = scenario.full if args.duration is None else args.duration
    place = work / name
    place.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(args.redis_server)
    redis.start()
    try:
        async with asyncio.timeout(args.max_seconds):
            return await run_scenario(name, place, redis, load, seconds)
    except Exception as exc:
        traceback.print_exc()
        return f"{type(exc).__name__}: {exc}"
    finally:
        redis.cleanup()


def failed(result: ChaosResult | str) -> bool:
    if isinstance(result, str):
        return True
    v = result.verdict
    return bool(
        v.lost_otherwise
        or v.out_of_order
        or v.outside_lifecycle
        or v.unpaired
        or not result.settled
        or result.recovery is None
    )


async def run(args: argparse.Namespace, work: Path) -> dict[str, ChaosResult | str]:
    results: dict[str, ChaosResult | str] = {}
    for name in args.scenarios:
        print(f"--- {name}", flush=True)
        started = time.monotonic()
        result = await one(name, args, work)
        results[name] = result
        took = time.monotonic() - started
        if isinstance(result, str):
            print(f"{name}: FAILED to run after {took:.0f}s: {result}", flush=True)
        else:
            print(f"{ChaosResult.HEADER}\n{result.row()}\n{result.details()}", flush=True)
    return results


def broker_version() -> str:
    """The commit the pods run, and whether the broker's code differs from it (another
    change may be under way in the same tree)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "tunnel_broker"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + (" + uncommitted tunnel_broker changes" if dirty else "")


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, _sigterm)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tb-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join([".venv/bin/python", "bench/chaos.py", *sys.argv[1:]])
    print(
        f"tunnel broker chaos: {command}\nrepo={REPO_ROOT} broker={broker_version()} "
        f"python={sys.version.split()[0]} cpus={os.cpu_count()} work={work}",
        flush=True,
    )
    began = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            results = runner.run(run(args, work))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    done = [r for r in results.values() if isinstance(r, ChaosResult)]
    print(
        f"\n## Chaos results\n\n`{command}` ({time.monotonic() - began:.0f} s, "
        f"broker {broker_version()})\n"
    )
    print(table(done))
    for name, r in results.items():
        if isinstance(r, str):
            print(f"\n{name}: did not run to the end: {r}")
    if args.json:
        doc = {
            "command": command,
            "results": {
                name: r if isinstance(r, str) else r.summary() for name, r in results.items()
            },
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 1 if any(failed(r) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""How much CPU the business SDK adds per call, compared with a bare httpx request.

The SDK does more than ``httpx.post``: it builds targets and payloads, encodes JSON, checks the
answer against the contract, maps errors and keeps a retry state. This bench checks that all of
that stays small next to the HTTP work itself (target: at most 10% more CPU per call).

For each operation (send, get_tunnel, create_tunnel) and each client (sync, async) it runs the
same calls twice against a real broker, once through the SDK (as configured by default) and once
as the hand-written httpx request a developer would make instead (a default ``httpx`` client,
JSON body, status check, ``response.json()``, and for the 404 of ``get_tunnel`` the check of the
problem ``code`` that tells "not connected" from a wrong URL), in interleaved rounds so drift in
the machine's speed hits both alike.
Only this process's CPU is counted (``time.process_time``): the broker runs in its own process,
pinned to another CPU, so its work is not in the numbers.

    .venv/bin/python bench/sdk_overhead.py                  # ~30 s
    .venv/bin/python bench/sdk_overhead.py --calls 200 --rounds 5 --check   # quick, exit 1 > 10%
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from common import API_KEY, REPO_ROOT, pin_to_cpu, start_broker, write_apps_file

sys.path.insert(0, str(REPO_ROOT))

from business_sdk import SyncTunnelBroker, Target, TunnelBroker

LOAD_CPU = 1
TARGET_OVERHEAD = 0.10
TUNNEL_ID = "tun_bench_not_connected"


@dataclass
class Result:
    operation: str
    client: str
    bare_us: float
    sdk_us: float

    @property
    def overhead(self) -> float:
        return self.sdk_us / self.bare_us - 1.0


# ----------------------------------------------------------------------------- calls


def bare_sync_calls(client: httpx.Client, base: str) -> dict[str, Callable[[], Any]]:
    """What a developer would write without the SDK, with the same checks it makes."""
    headers = {"authorization": f"Bearer {API_KEY}"}

    def send() -> Any:
        body = {"messages": [{"to": {"tunnels": [TUNNEL_ID]}, "data": "hello"}]}
        response = client.post(f"{base}/v1/messages", json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    def get_tunnel() -> Any:
        response = client.get(f"{base}/v1/tunnels/{TUNNEL_ID}", headers=headers)
        if response.status_code == 404 and response.json()["code"] == "tunnel_not_connected":
            return None
        response.raise_for_status()
        return response.json()

    def create_tunnel() -> Any:
        body = {"user_id": "user-1", "identity": {"nick": "Ann"}}
        response = client.post(f"{base}/v1/tunnels", json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    return {"send": send, "get_tunnel": get_tunnel, "create_tunnel": create_tunnel}


def sdk_sync_calls(broker: SyncTunnelBroker) -> dict[str, Callable[[], Any]]:
    return {
        "send": lambda: broker.send(Target.tunnels(TUNNEL_ID), "hello"),
        "get_tunnel": lambda: broker.get_tunnel(TUNNEL_ID),
        "create_tunnel": lambda: broker.create_tunnel("user-1", identity={"nick": "Ann"}),
    }


def bare_async_calls(
    client: httpx.AsyncClient, base: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    headers = {"authorization": f"Bearer {API_KEY}"}

    async def send() -> Any:
        body = {"messages": [{"to": {"tunnels": [TUNNEL_ID]}, "data": "hello"}]}
        response = await client.post(f"{base}/v1/messages", json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    async def get_tunnel() -> Any:
        response = await client.get(f"{base}/v1/tunnels/{TUNNEL_ID}", headers=headers)
        if response.status_code == 404 and response.json()["code"] == "tunnel_not_connected":
            return None
        response.raise_for_status()
        return response.json()

    async def create_tunnel() -> Any:
        body = {"user_id": "user-1", "identity": {"nick": "Ann"}}
        response = await client.post(f"{base}/v1/tunnels", json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    return {"send": send, "get_tunnel": get_tunnel, "create_tunnel": create_tunnel}


def sdk_async_calls(broker: TunnelBroker) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "send": lambda: broker.send(Target.tunnels(TUNNEL_ID), "hello"),
        "get_tunnel": lambda: broker.get_tunnel(TUNNEL_ID),
        "create_tunnel": lambda: broker.create_tunnel("user-1", identity={"nick": "Ann"}),
    }


# ----------------------------------------------------------------------------- timing


def cpu_per_call_sync(fn: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


async def cpu_per_call_async(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        await fn()
    return (time.process_time() - start) / calls


def compare_sync(base: str, calls: int, rounds: int) -> list[Result]:
    results = []
    with httpx.Client() as client, SyncTunnelBroker(base, API_KEY) as sdk:
        bare_ops, sdk_ops = bare_sync_calls(client, base), sdk_sync_calls(sdk)
        for name in bare_ops:
            for fn in (bare_ops[name], sdk_ops[name]):
                cpu_per_call_sync(fn, max(20, calls // 10))  # warm up
            bare: list[float] = []
            mine: list[float] = []
            for round_no in range(rounds):
                order = [(bare_ops[name], bare), (sdk_ops[name], mine)]
                for fn, sink in order if round_no % 2 == 0 else reversed(order):
                    sink.append(cpu_per_call_sync(fn, calls))
            results.append(
                Result(name, "sync", statistics.median(bare) * 1e6, statistics.median(mine) * 1e6)
            )
    return results


async def compare_async(base: str, calls: int, rounds: int) -> list[Result]:
    results = []
    async with (
        httpx.AsyncClient() as client,
        TunnelBroker(base, API_KEY) as sdk,
    ):
        bare_ops, sdk_ops = bare_async_calls(client, base), sdk_async_calls(sdk)
        for name in bare_ops:
            for fn in (bare_ops[name], sdk_ops[name]):
                await cpu_per_call_async(fn, max(20, calls // 10))
            bare: list[float] = []
            mine: list[float] = []
            for round_no in range(rounds):
                order = [(bare_ops[name], bare), (sdk_ops[name], mine)]
                for fn, sink in order if round_no % 2 == 0 else reversed(order):
                    sink.append(await cpu_per_call_async(fn, calls))
            results.append(
                Result(name, "async", statistics.median(bare) * 1e6, statistics.median(mine) * 1e6)
            )
    return results


# ----------------------------------------------------------------------------- main


def report(results: list[Result], target: float) -> bool:
    print(f"{'operation':<15}{'client':<8}{'bare µs':>10}{'sdk µs':>10}{'overhead':>10}")
    ok = True
    for r in results:
        flag = "" if r.overhead <= target else "  > target"
        ok = ok and not flag
        print(
            f"{r.operation:<15}{r.client:<8}{r.bare_us:>10.1f}{r.sdk_us:>10.1f}"
            f"{r.overhead:>+10.1%}{flag}"
        )
    total_bare = sum(r.bare_us for r in results)
    total_sdk = sum(r.sdk_us for r in results)
    print(f"overall: {total_sdk / total_bare - 1:+.1%} CPU per call (target ≤ {target:.0%})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per measured block")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved blocks per variant")
    parser.add_argument("--target", type=float, default=TARGET_OVERHEAD)
    parser.add_argument("--check", action="store_true", help="exit 1 if above the target")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    pin_to_cpu(LOAD_CPU)
    with tempfile.TemporaryDirectory(prefix="sdk-bench-") as tmp:
        tmp_path = Path(tmp)
        apps_file = write_apps_file(
            tmp_path / "apps.toml",
            "http://127.0.0.1:9/unused",  # no tunnels connect, so no webhooks are sent
            extra_limits={"api_requests_per_second": "1000000", "api_burst": "1000000"},
        )
        broker = start_broker(apps_file, tmp_path / "logs")
        try:
            results = compare_sync(broker.base_url, args.calls, args.rounds)
            results += asyncio.run(compare_async(broker.base_url, args.calls, args.rounds))
        finally:
            broker.stop()
    ok = report(results, args.target)
    if args.json:
        payload = [{**asdict(r), "overhead": r.overhead} for r in results]
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

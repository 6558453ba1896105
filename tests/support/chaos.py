"""Fault scenarios under steady load ("chaos"): one fault per run, and what it cost.

A run starts three broker pods on a real redis-server (pod ``CUT_POD`` reaches Redis
through a ``TcpProxy``, so it alone can be cut off), a real webhook receiver (the business
server), ``tunnels`` ``SteadyClient``s spread over the pods and a ``Pusher`` that pushes
through the API, all at a steady rate. After a warm-up it injects ONE fault, keeps the
load going until every tunnel has caught up (bounded), stops, waits for every
``tunnel.closed``, and returns a ``ChaosResult``: one table row of what was sent,
delivered, lost (in flight at the fault / otherwise), duplicated (redelivered with the
same event id / as a new event), reordered, left unpaired, pushed, and how long recovery
took: from the end of the fault until every tunnel's first message sent after it has
reached the business server (with per-tunnel order, everything older has too).

The faults themselves are in ``fault_scenarios.py``. The same code runs the short versions
(``tests/faults/test_chaos.py``) and the full ones (``bench/chaos.py``): sizes and
durations are parameters (``Load``, ``fault_seconds``).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import Cluster, cluster_of
from tests.support.fault_scenarios import (
    ARGS,
    CUT_POD,
    EXTRA_SCENARIOS,
    LIMITS,
    PODS,
    SCENARIOS,
    Rig,
)
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.traffic import PushRecord, SteadyClient, Verdict, check

__all__ = ["EXTRA_SCENARIOS", "SCENARIOS", "ChaosResult", "Load", "run_scenario", "table"]


@dataclass
class Load:
    """How much traffic, and how long around the fault (seconds)."""

    tunnels: int = 30
    rate: float = 5.0  # messages per second per tunnel
    push_rate: float = 10.0  # API calls per second
    # Clients connect at this pace (hundreds of connects at once are a fault of their
    # own: ``lb_restart``), then the warm-up runs before the fault.
    connects_per_second: float = 100.0
    warmup: float = 3.0
    after_min: float = 3.0  # load kept this long after every tunnel caught up...
    after_max: float = 60.0  # ...but never longer than this after the fault
    settle_timeout: float = 120.0  # for every tunnel.closed once the load stopped
    seed: int = 1


# ------------------------------------------------------------------------------ pushes


@dataclass
class Pusher:
    """The business server pushing through the API at a steady rate, to random tunnels
    (80 %), users (15 %) or everyone (5 %), spreading its calls over the pods; it keeps
    what each call answered (only a 200 counts as sent: a 503 was refused, a call with
    no answer is uncertain and not counted)."""

    cluster: Cluster
    clients: list[SteadyClient]
    rate: float
    rng: random.Random
    records: list[PushRecord] = field(default_factory=list)

    def _message(self) -> tuple[str, tuple[str, ...], dict[str, object]]:
        roll = self.rng.random()
        if roll < 0.80:
            ids = tuple(c.tunnel_id for c in self.rng.sample(self.clients, self.rng.randint(1, 3)))
            return "tunnels", ids, {"tunnels": list(ids)}
        if roll < 0.95:
            users = tuple(c.user_id for c in self.rng.sample(self.clients, self.rng.randint(1, 2)))
            return "users", users, {"users": list(users)}
        return "all", (), {"all": True}

    async def _push(self, http: httpx.AsyncClient, n: int) -> None:
        kind, targets, to = self._message()
        payload = f"p{n}"
        started = time.monotonic()
        status: int | str
        not_connected: tuple[str, ...] = ()
        try:
            response = await http.post(
                "/v1/messages", json={"messages": [{"to": to, "data": payload}]}
            )
            status = response.status_code
            if status == 200:
                not_connected = tuple(response.json().get("not_connected", ()))
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.records.append(
            PushRecord(payload, kind, targets, started, time.monotonic(), status, not_connected)
        )

    async def run(self, stop: asyncio.Event, max_seconds: float) -> None:
        apis = [self.cluster.api(pod) for pod in range(len(self.cluster.pods))]
        for api in apis:
            api.timeout = httpx.Timeout(5.0)
        calls = asyncio.Semaphore(16)
        tasks: set[asyncio.Task[None]] = set()

        async def one(http: httpx.AsyncClient, n: int) -> None:
            async with calls:
                await self._push(http, n)

        interval = 1.0 / self.rate
        next_at = time.monotonic()
        give_up = next_at + max_seconds
        try:
            for n in range(1, int(self.rate * max_seconds) + 1):
                if stop.is_set() or time.monotonic() > give_up:
                    break
                task = asyncio.create_task(one(apis[n % len(apis)], n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.wait(list(tasks), timeout=30)
        finally:
            for api in apis:
                await api.aclose()

    def count(self, accepted: bool) -> int:
        return sum(1 for r in self.records if r.accepted == accepted)


# ------------------------------------------------------------------------------ result


@dataclass
class ChaosResult:
    scenario: str
    tunnels: int
    fault_seconds: float
    verdict: Verdict
    push_calls: int
    push_refused: int  # 503 or no answer: not counted as sent
    recovery: float | None  # seconds; None: some tunnel never caught up
    settled: bool  # every tunnel's lifecycle closed before the deadline
    seconds: float  # the whole run
    log_errors: dict[int, int] = field(default_factory=dict)  # pod -> ERROR lines
    logs: list[str] = field(default_factory=list)
    # What the numbers were computed from, to look closer at a surprising row.
    clients: list[SteadyClient] = field(default_factory=list, repr=False)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    fault_started: float = 0.0
    fault_ended: float = 0.0

    HEADER = (
        "| scenario | tunnels | fault s | sent | delivered | lost in flight / otherwise "
        "| dup same id / other | order | outside | unpaired | push deliveries sent | received "
        "| push lost in flight / otherwise | push calls refused | recovery s |"
    )
    RULE = "|" + " --- |" * 15

    def row(self) -> str:
        v = self.verdict
        recovery = "never" if self.recovery is None else f"{self.recovery:.1f}"
        if not self.settled:
            recovery += " (unsettled)"
        return (
            f"| {self.scenario} | {self.tunnels} | {self.fault_seconds:g} | {v.sent} "
            f"| {v.delivered} | {v.lost_in_flight} / {v.lost_otherwise} "
            f"| {v.redelivered} / {v.duplicated_other} | {v.out_of_order} "
            f"| {v.outside_lifecycle} | {len(v.unpaired)} | {v.pushes_sent} "
            f"| {v.pushes_received} | {v.pushes_lost_in_flight} / {v.pushes_lost_otherwise} "
            f"| {self.push_refused} of {self.push_calls} | {recovery} |"
        )

    def summary(self) -> dict[str, object]:
        """The numbers, for JSON."""
        v = self.verdict
        numbers = {f.name: getattr(v, f.name) for f in fields(v)}
        numbers = {k: n for k, n in numbers.items() if isinstance(n, int)}
        return {
            "scenario": self.scenario,
            "tunnels": self.tunnels,
            "fault_seconds": self.fault_seconds,
            **numbers,
            "unpaired": len(v.unpaired),
            "punished": len(v.punished),
            "push_calls": self.push_calls,
            "push_refused": self.push_refused,
            "recovery": self.recovery,
            "settled": self.settled,
            "seconds": self.seconds,
            "log_errors": self.log_errors,
            "logs": self.logs,
            "row": self.row(),
        }

    def details(self) -> str:
        v = self.verdict
        lines = [
            f"{self.scenario}: run {self.seconds:.0f}s, punished {len(v.punished)}, "
            f"lifecycle redelivered {v.lifecycle_redelivered}, pushes duplicated "
            f"{v.pushes_duplicated}, ERROR log lines per pod {self.log_errors}",
        ]
        by_tunnel: dict[str, list[int]] = {}
        for tunnel, number, _, _ in v.losses:
            by_tunnel.setdefault(tunnel, []).append(number)
        clients = {c.tunnel_id: c for c in self.clients}
        for tunnel, numbers in list(by_tunnel.items())[:3]:
            lines.append(
                f"  lost otherwise: {tunnel} #{numbers[0]}..#{numbers[-1]} "
                f"({len(numbers)}), {self._story(clients.get(tunnel), numbers[0])}"
            )
        if len(by_tunnel) > 3:
            lines.append(f"  ... {len(by_tunnel)} tunnels lost messages otherwise")
        for tunnel, before, after in v.reorders[:3]:
            lines.append(
                f"  order: {tunnel} delivered #{after} after #{before}, "
                f"{self._story(clients.get(tunnel), after)}"
            )
        for push, tunnel in v.push_losses[:3]:
            client = clients.get(tunnel)
            sockets = self._sockets(client) if client else ""
            start, end = push.started - self.fault_started, push.answered - self.fault_started
            lines.append(
                f"  push lost otherwise: {push.payload} to {push.kind} {tunnel}, "
                f"POST {start:+.2f}..{end:+.2f}; sockets: {sockets}"
            )
        for tunnel, lifecycle in v.unpaired[:5]:
            lines.append(f"  unpaired: {tunnel} {lifecycle}")
        lines.append("  logs: " + " ".join(self.logs))
        return "\n".join(lines)

    def _story(self, client: SteadyClient | None, number: int) -> str:
        """When ``number`` was sent and what became of each socket, in seconds from the
        start of the fault."""
        if client is None:
            return ""
        sent = client.sent_at[number - 1] - self.fault_started
        return f"#{number} sent {sent:+.2f}; sockets: {self._sockets(client)}"

    def _sockets(self, client: SteadyClient) -> str:
        t0 = self.fault_started

        def at(t: float | None) -> str:
            return "-" if t is None else f"{t - t0:+.2f}"

        return ", ".join(
            f"pod {s.pod} {at(s.opened_at)}..{at(s.ended_at)} {s.close}" for s in client.history
        )


def table(results: list[ChaosResult]) -> str:
    return "\n".join([ChaosResult.HEADER, ChaosResult.RULE, *(r.row() for r in results)])


# ------------------------------------------------------------------------------ running


async def start_clients(cluster: Cluster, load: Load) -> list[SteadyClient]:
    """One tunnel per user, issued through the pods in turn; client i starts on pod i % 3."""
    apis = [cluster.api(pod) for pod in range(PODS)]

    async def one(i: int) -> SteadyClient:
        response = await apis[i % PODS].post("/v1/tunnels", json={"user_id": f"user-{i}"})
        assert response.status_code == 201, response.text
        issued = response.json()
        urls = [cluster.on_pod(pod, issued) for pod in range(PODS)]
        return SteadyClient(
            issued["tunnel_id"], urls, pod=i % PODS, rate=load.rate, user_id=f"user-{i}"
        )

    clients: list[SteadyClient] = []
    try:
        for first in range(0, load.tunnels, 50):
            batch = range(first, min(first + 50, load.tunnels))
            clients += await asyncio.gather(*(one(i) for i in batch))
    finally:
        for api in apis:
            await api.aclose()
    return clients


class CatchUp:
    """Whether every tunnel's first message sent after a moment has been delivered
    (read from the receiver's deliveries as they come, not rescanned)."""

    def __init__(self, clients: list[SteadyClient], since: float) -> None:
        self.clients = clients
        self.since = since
        self.highest: dict[str, int] = {}
        self.seen = 0

    def first_after(self, client: SteadyClient) -> int | None:
        """The first number ``client`` sent at or after ``since`` (None: none yet)."""
        i = bisect.bisect_left(client.sent_at, self.since)
        return i + 1 if i < len(client.sent_at) else None

    def done(self, cluster: Cluster) -> bool:
        deliveries = cluster.receiver.deliveries
        for delivery in deliveries[self.seen :]:
            for e in delivery.events:
                if e["type"] == "tunnel.message":
                    t = e["tunnel_id"]
                    self.highest[t] = max(self.highest.get(t, 0), int(e["data"]))
        self.seen = len(deliveries)
        for client in self.clients:
            first = self.first_after(client)
            if first is None or self.highest.get(client.tunnel_id, 0) < first:
                return False
        return True


def recovery_seconds(cluster: Cluster, clients: list[SteadyClient], since: float) -> float | None:
    """Until every tunnel's first message sent after ``since`` was delivered."""
    catch = CatchUp(clients, since)
    firsts = {c.tunnel_id: catch.first_after(c) for c in clients}
    reached: dict[str, float] = {}
    for delivery in cluster.receiver.deliveries:
        for e in delivery.events:
            t = e["tunnel_id"]
            first = firsts.get(t)
            if e["type"] != "tunnel.message" or t in reached or first is None:
                continue
            if int(e["data"]) >= first:
                reached[t] = delivery.received_at
    if len(reached) < len(clients):
        return None
    return max(reached.values()) - since


def settled(cluster: Cluster, clients: list[SteadyClient]) -> bool:
    """Every tunnel's lifecycle (each event once) ends with the client's own close."""
    last: dict[str, dict[str, object]] = {}
    seen: set[str] = set()
    for e in cluster.receiver.events:
        if e["type"] != "tunnel.message" and e["id"] not in seen:
            seen.add(e["id"])
            last[e["tunnel_id"]] = e
    return all(
        (event := last.get(c.tunnel_id)) is not None
        and event["type"] == "tunnel.closed"
        and event.get("code") == 1000
        for c in clients
    )


async def _wait(condition: Callable[[], bool], seconds: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def _error_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line)


async def run_scenario(
    name: str,
    tmp_path: Path,
    redis: RedisServer,
    load: Load | None = None,
    fault_seconds: float | None = None,
) -> ChaosResult:
    """Run scenario ``name`` once on a fresh cluster over ``redis`` (started)."""
    load = load or Load()
    scenario = SCENARIOS.get(name) or EXTRA_SCENARIOS[name]
    seconds = scenario.short if fault_seconds is None else fault_seconds
    seconds = seconds if scenario.full else 0.0  # an instant fault (a kill) has no length
    began = time.monotonic()
    proxy = TcpProxy(redis.port)
    proxy.start()
    redis_urls = [proxy.url() if pod == CUT_POD else None for pod in range(PODS)]
    try:
        async with cluster_of(
            tmp_path, redis, limits=LIMITS, args=ARGS, on_events=None, redis_urls=redis_urls
        ) as cluster:
            clients = await start_clients(cluster, load)
            rig = Rig(cluster, redis, proxy, clients=clients)
            stop = asyncio.Event()
            budget = load.warmup + seconds + load.after_max + 120
            senders = []
            for client in clients:
                senders.append(asyncio.create_task(client.run(stop, budget)))
                await asyncio.sleep(1.0 / load.connects_per_second)
            pusher = Pusher(cluster, clients, load.push_rate, random.Random(load.seed))
            pushing = asyncio.create_task(pusher.run(stop, budget))
            try:
                await asyncio.sleep(load.warmup)
                await scenario.fault(rig, seconds)
                catch = CatchUp(clients, rig.fault_ended)
                remaining = max(0.0, rig.fault_ended + load.after_max - time.monotonic())
                if await _wait(lambda: catch.done(cluster), remaining, 0.5):
                    await asyncio.sleep(load.after_min)
            finally:
                stop.set()
                await asyncio.gather(*senders, pushing)
            await asyncio.gather(*(c.finish() for c in clients))
            done = await _wait(lambda: settled(cluster, clients), load.settle_timeout)
            await asyncio.sleep(1.0)  # late redeliveries count too
            verdict = check(clients, cluster.receiver.events, rig.faults, pusher.records)
            return ChaosResult(
                scenario=name,
                tunnels=load.tunnels,
                fault_seconds=seconds,
                verdict=verdict,
                push_calls=len(pusher.records),
                push_refused=pusher.count(accepted=False),
                recovery=recovery_seconds(cluster, clients, rig.fault_ended),
                settled=done,
                seconds=time.monotonic() - began,
                log_errors={i: _error_lines(p.read_output()) for i, p in enumerate(cluster.pods)},
                logs=[str(p.log_path) for p in cluster.pods],
                clients=clients,
                events=cluster.receiver.events,
                fault_started=rig.fault_started,
                fault_ended=rig.fault_ended,
            )
    finally:
        proxy.stop()

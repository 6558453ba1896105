"""The faults of the chaos runs (``chaos.py``), one function each, and their lengths.

Each fault gets a ``Rig`` (the running cluster, redis-server, the proxy in front of pod
``CUT_POD`` and the clients) and its length in seconds; it notes when it began and ended
and what a push or a message sent meanwhile could not survive (``FaultLog``), so that
``traffic.check`` can tell a loss in flight from a real one. ``SCENARIOS`` are the nine
of the brief; ``EXTRA_SCENARIOS`` go beyond it (two of them showed broker bugs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tests.support.cluster import LEASE, Cluster
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.traffic import FaultLog, SteadyClient

PODS = 3
CUT_POD = 2  # reaches Redis through the proxy
KILLED_POD = 1
FROZEN_POD = 1
STOPPED_POD = 0
LIMITS = {"webhook_buffer_events": 500}  # back-pressure engages at once in an outage
ARGS = (
    # Keepalive deadlines well inside the faults: a held socket must survive them.
    "--ping-interval",
    "5",
    "--ping-timeout",
    "5",
    "--webhook-retry-max-delay",
    "1",
    "--connect-wait-seconds",
    "2",
    "--shutdown-flush-seconds",
    "2",
)


@dataclass
class Rig:
    """What a fault acts on, and where it notes what it did."""

    cluster: Cluster
    redis: RedisServer
    proxy: TcpProxy
    faults: FaultLog = field(default_factory=FaultLog)
    fault_started: float = 0.0
    fault_ended: float = 0.0
    reject_cut: bool = False  # pod_cut_off_rejected: refuse instead of dropping
    clients: list[SteadyClient] = field(default_factory=list)

    def begin(self) -> float:
        self.fault_started = time.monotonic()
        return self.fault_started

    def end(self, pods: frozenset[int] | None = None, extra: float = 0.0) -> None:
        """The fault is over; pushes to ``pods`` (``None``: all) between its start and
        ``extra`` seconds after now may be lost in flight."""
        self.fault_ended = time.monotonic()
        self.faults.windows.append((pods, self.fault_started, self.fault_ended + extra))


Fault = Callable[[Rig, float], Awaitable[None]]


async def business_down(rig: Rig, seconds: float) -> None:
    rig.begin()
    async with rig.cluster.receiver.outage():
        await asyncio.sleep(seconds)
    rig.fault_ended = time.monotonic()


@contextlib.asynccontextmanager
async def _behaving(rig: Rig, behaviour: str) -> AsyncIterator[None]:
    receiver = rig.cluster.receiver
    receiver.behaviour = behaviour
    try:
        yield
    finally:
        receiver.behaviour = "ok"


async def business_slow(rig: Rig, seconds: float) -> None:
    rig.begin()
    async with _behaving(rig, "slow:5"):
        await asyncio.sleep(seconds)
    rig.fault_ended = time.monotonic()


async def business_500(rig: Rig, seconds: float) -> None:
    rig.begin()
    async with _behaving(rig, "status:500"):
        await asyncio.sleep(seconds)
    rig.fault_ended = time.monotonic()


async def business_garbage(rig: Rig, seconds: float) -> None:
    """Half the time a body that is not JSON, half the time JSON of the wrong shape."""
    rig.begin()
    async with _behaving(rig, "garbage"):
        await asyncio.sleep(seconds / 2)
    async with _behaving(rig, "wrong-shape"):
        await asyncio.sleep(seconds / 2)
    rig.fault_ended = time.monotonic()


async def kill_pod(rig: Rig, seconds: float) -> None:
    """SIGKILL: no goodbye; its tunnels are reaped or taken over within about a lease."""
    pod = rig.cluster.pods[KILLED_POD]
    assert pod.proc is not None
    rig.begin()
    pod.proc.kill()
    rig.faults.dead[KILLED_POD] = rig.fault_started
    rig.end(frozenset({KILLED_POD}), extra=LEASE)
    await asyncio.to_thread(pod.proc.wait)


async def sigterm_while_business_down(rig: Rig, seconds: float) -> None:
    """Receiver down for ``seconds``; a third of the way in, SIGTERM one pod, which
    must leave what it could not deliver to the others."""
    pod = rig.cluster.pods[STOPPED_POD]
    rig.begin()
    async with rig.cluster.receiver.outage():
        await asyncio.sleep(seconds / 3)
        stopped_at = time.monotonic()
        pod.terminate()
        code = await pod.wait(60)
        rig.faults.windows.append((frozenset({STOPPED_POD}), stopped_at, time.monotonic()))
        if code != 0:
            raise AssertionError(f"pod {STOPPED_POD} exited with {code}")
        await asyncio.sleep(max(0.0, rig.fault_started + seconds - time.monotonic()))
    rig.fault_ended = time.monotonic()


async def redis_restart_empty(rig: Rig, seconds: float) -> None:
    """Stop redis-server and start it again (no persistence: empty) after ``seconds``."""
    rig.begin()
    await asyncio.to_thread(rig.redis.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(rig.redis.start)
    rig.end(None, extra=LEASE / 4)


async def _paused(proc: subprocess.Popen[bytes] | None, seconds: float) -> None:
    """SIGSTOP ``proc`` for ``seconds``: its sockets stay open, nothing answers."""
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _drop_every_socket(rig: Rig) -> None:
    """Reset every client's connection (the clients reconnect at once, to the next pod)."""
    for client in rig.clients:
        client.drop()


async def redis_frozen(rig: Rig, seconds: float) -> None:
    """SIGSTOP redis-server: connections stay open, nothing answers; then SIGCONT."""
    rig.begin()
    await _paused(rig.redis.proc, seconds)
    rig.end(None, extra=LEASE / 4)


async def pod_cut_off(rig: Rig, seconds: float) -> None:
    """Partition pod ``CUT_POD`` from Redis (packets dropped, not refused) for
    ``seconds`` (more than a lease: the others report its tunnels lost), then heal."""
    rig.begin()
    rig.proxy.cut(reject=rig.reject_cut)
    try:
        await asyncio.sleep(seconds)
    finally:
        rig.proxy.restore()
    rig.end(frozenset({CUT_POD}), extra=LEASE / 4)


@dataclass(frozen=True)
class Scenario:
    fault: Fault
    short: float  # fault seconds in CI
    full: float  # fault seconds in the runner


SCENARIOS: dict[str, Scenario] = {
    "business_down_60s": Scenario(business_down, 10, 60),
    "business_slow": Scenario(business_slow, 8, 30),
    "business_500": Scenario(business_500, 8, 30),
    "business_garbage": Scenario(business_garbage, 8, 30),
    "kill_pod": Scenario(kill_pod, 0, 0),
    "sigterm_while_business_down": Scenario(sigterm_while_business_down, 10, 30),
    "redis_restart_empty": Scenario(redis_restart_empty, 1, 5),
    "redis_frozen_10s": Scenario(redis_frozen, 10, 10),
    "pod_cut_off": Scenario(pod_cut_off, 3 * LEASE, 3 * LEASE),
}


async def pod_cut_off_rejected(rig: Rig, seconds: float) -> None:
    """As ``pod_cut_off``, but connections are reset and refused (the pod knows at once):
    for comparison, to tell what comes from noticing late."""
    rig.reject_cut = True
    await pod_cut_off(rig, seconds)


async def pod_frozen(rig: Rig, seconds: float) -> None:
    """SIGSTOP one pod for ``seconds`` (more than a lease: a long GC or VM pause, or a
    starved CPU), then SIGCONT: the others reap it meanwhile, though it never lost Redis."""
    rig.begin()
    await _paused(rig.cluster.pods[FROZEN_POD].proc, seconds)
    rig.end(frozenset({FROZEN_POD}), extra=LEASE / 4)


async def lb_restart(rig: Rig, seconds: float) -> None:
    """Every client's connection drops at once (a load balancer restarting), and every
    client reconnects at once, to the next pod: a burst of connects on every pod."""
    rig.begin()
    _drop_every_socket(rig)
    rig.end(None, extra=1.0)


async def redis_frozen_while_connecting(rig: Rig, seconds: float) -> None:
    """Every client reconnects at once (as in ``lb_restart``) and redis-server stops
    answering (SIGSTOP) for ``seconds`` meanwhile: connects whose registration times out,
    and Redis carrying out the timed-out writes when it resumes."""
    rig.begin()
    _drop_every_socket(rig)
    await _paused(rig.redis.proc, seconds)
    rig.end(None, extra=LEASE / 4)


# Beyond the brief's list: faults that showed broker bugs (see tests/faults/test_chaos.py),
# and comparisons; runnable by name from bench/chaos.py.
EXTRA_SCENARIOS: dict[str, Scenario] = {
    "pod_cut_off_rejected": Scenario(pod_cut_off_rejected, 3 * LEASE, 3 * LEASE),
    "pod_frozen": Scenario(pod_frozen, 3 * LEASE, 3 * LEASE),
    "lb_restart": Scenario(lb_restart, 0, 0),
    "redis_frozen_while_connecting": Scenario(redis_frozen_while_connecting, 1.5, 1.5),
}

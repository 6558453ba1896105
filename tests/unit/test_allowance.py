"""The message quota's reservations (``backend/allowance.py``): the ledger's arithmetic,
and pods sharing one quota through it, whatever the interleaving.

The ledger here is ``allowance.settle`` on a dict, the reference the Redis script
follows (``tests/backend/test_quota_ledger.py`` runs both on the same calls)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnel_broker.apps import AppLimits
from tunnel_broker.backend.allowance import Allowances, Answer, Ask, settle
from tunnel_broker.backend.quotas import LocalQuotas, Quotas
from tunnel_broker.errors import MessageQuotaExceeded
from tunnel_broker.usage.periods import Period

NOW = 1_764_684_000.0  # 2025-12-02 14:00 UTC, a period's start


def ask(
    pod: str,
    total: int = 0,
    held: int = 0,
    need: int = 0,
    want: int = 0,
    release: bool = False,
    quota: int = 100,
) -> Ask:
    return Ask(pod, total, held, need, want, release, quota)


# ---- the arithmetic ---------------------------------------------------------------------


def test_a_reservation_takes_at_most_an_eighth_of_what_is_left() -> None:
    fields: dict[str, int] = {}
    answer = settle(fields, ask("a", want=1000, need=1), now_ms=0)
    assert answer == Answer(granted=12, used=0, others=0, free=88)  # 100 // 8
    answer = settle(fields, ask("b", want=1000, need=1), now_ms=0)
    assert answer == Answer(granted=11, used=0, others=12, free=77)
    assert fields["h:a"] == 12 and fields["h:b"] == 11


def test_what_is_needed_is_granted_whole_or_not_at_all() -> None:
    fields: dict[str, int] = {}
    assert settle(fields, ask("a", need=40, want=1), now_ms=0).granted == 40
    assert settle(fields, ask("b", need=61, want=1), now_ms=0).granted == 0  # 60 left
    assert settle(fields, ask("b", need=60, want=1), now_ms=0).granted == 60


def test_the_tail_is_reserved_one_message_at_a_time() -> None:
    fields = {"used": 95}
    grants = [
        settle(fields, ask("a", total=i, need=1, want=64), now_ms=0).granted for i in range(5)
    ]
    assert grants == [1, 1, 1, 1, 1]
    assert fields["used"] == 95 + 4  # the first four reported, the fifth still held
    assert settle(fields, ask("a", total=5, held=0, need=1), now_ms=0).granted == 0


def test_use_is_reported_cumulatively_so_a_repeated_call_counts_nothing_twice() -> None:
    fields: dict[str, int] = {}
    settle(fields, ask("a", need=10, want=10), now_ms=0)
    settle(fields, ask("a", total=7, held=3), now_ms=0)
    settle(fields, ask("a", total=7, held=3), now_ms=0)  # the answer was lost: sent again
    assert fields["used"] == 7


def test_a_release_gives_back_what_was_not_used() -> None:
    fields: dict[str, int] = {}
    settle(fields, ask("a", need=50, want=50), now_ms=0)
    answer = settle(fields, ask("a", total=20, release=True), now_ms=0)
    assert answer.used == 20 and answer.free == 80
    assert "h:a" not in fields


def test_a_lapsed_reservation_counts_as_used_and_its_pods_report_adds_nothing() -> None:
    fields: dict[str, int] = {}
    settle(fields, Ask("dead", 0, 0, 30, 30, False, 100, hold_ms=1000), now_ms=0)
    answer = settle(fields, ask("b", need=1, want=1), now_ms=1000)
    assert answer.used == 30 and answer.others == 0  # what "dead" used of it is unknown
    assert fields["r:dead"] == 1
    settle(fields, ask("dead", total=12, held=0), now_ms=2000)  # it was only paused
    assert fields["used"] == 30 and "r:dead" not in fields
    settle(fields, ask("dead", total=13, held=0), now_ms=2000)
    assert fields["used"] == 31


# ---- pods sharing a quota -----------------------------------------------------------------


class Ledger:
    """``settle`` behind a round trip whose two halves let the event loop run
    ``delays`` turns: the interleaving of the pods' calls."""

    def __init__(self, delays: Iterator[int]) -> None:
        self.fields: dict[tuple[str, str], dict[str, int]] = {}
        self.delays = delays
        self.calls = 0

    async def settle(self, app_id: str, period: Period, ask: Ask) -> Answer:
        self.calls += 1
        for _ in range(next(self.delays)):
            await asyncio.sleep(0)
        fields = self.fields.setdefault((app_id, period.name), {})
        answer = settle(fields, ask, int(time.monotonic() * 1000))
        for _ in range(next(self.delays)):
            await asyncio.sleep(0)
        return answer


async def admit_all(quotas: list[Allowances], demand: list[tuple[int, int]], quota: int) -> int:
    """Each (pod, count) of ``demand`` sends ``count`` messages one after the other
    through that pod, all at once; how many the quota let through."""
    limits = AppLimits(message_quota=quota, message_quota_period="hour")
    admitted = 0

    async def send(pod: int, count: int) -> None:
        nonlocal admitted
        for _ in range(count):
            try:
                await PodQuotas(quotas[pod]).acquire("app", limits, 1)
            except MessageQuotaExceeded:
                continue
            admitted += 1

    await asyncio.gather(*(send(pod, count) for pod, count in demand))
    return admitted


class PodQuotas(Quotas):
    """``Quotas.acquire`` over one pod's allowances (as ``RedisQuotas`` does)."""

    def __init__(self, allowances: Allowances) -> None:
        super().__init__(lambda: NOW)
        self.allowances = allowances

    def admit(self, app_id: str, limits: AppLimits, n: int) -> bool | asyncio.Task[None]:
        assert limits.message_quota is not None
        return self.allowances.check(app_id, "hour", limits.message_quota, n)

    def take(self, app_id: str, n: int) -> None:
        self.allowances.take(app_id, n)

    def used(self, app_id: str, limits: AppLimits) -> int:
        return 0

    async def tunnels_open(self, app_id: str) -> int:
        return 0

    def _message_ratios(self) -> dict[tuple[str, str], float]:
        return {}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    quota=st.integers(1, 300),
    demand=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 120)), min_size=1, max_size=6),
    delays=st.lists(st.integers(0, 3), min_size=1, max_size=16),
)
def test_pods_admit_exactly_the_quota_whatever_the_interleaving(
    quota: int, demand: list[tuple[int, int]], delays: list[int]
) -> None:
    """Total admitted == min(demand, quota): never more (the ledger hands out only what
    is left), never fewer (a pod waits for the others' unused allowance instead of
    refusing while some is left)."""

    async def run() -> tuple[int, int]:
        ledger = Ledger(itertools.cycle(delays))
        pods = [
            Allowances(ledger, f"pod{i}", lambda: NOW, idle_seconds=0.01, report_seconds=0.005)
            for i in range(3)
        ]
        for pod in pods:
            pod.start()
        try:
            return await admit_all(pods, demand, quota), ledger.calls
        finally:
            for pod in pods:
                await pod.stop()

    admitted, _ = asyncio.run(run())
    assert admitted == min(sum(count for _, count in demand), quota)


def test_a_busy_pod_reserves_in_chunks_not_per_message() -> None:
    async def run() -> int:
        ledger = Ledger(itertools.repeat(0))
        pod = Allowances(ledger, "pod", lambda: NOW)
        await admit_all([pod], [(0, 5000)], 1_000_000)
        await pod.stop()
        return ledger.calls

    assert asyncio.run(run()) < 50


async def test_a_quota_raised_at_run_time_admits_again_and_a_lowered_one_refuses() -> None:
    ledger = Ledger(itertools.repeat(0))
    pod = PodQuotas(Allowances(ledger, "pod", lambda: NOW))
    for _ in range(10):
        await pod.acquire("app", AppLimits(message_quota=10), 1)
    with pytest.raises(MessageQuotaExceeded):
        await pod.acquire("app", AppLimits(message_quota=10), 1)
    await pod.acquire("app", AppLimits(message_quota=11), 1)
    with pytest.raises(MessageQuotaExceeded):
        await pod.acquire("app", AppLimits(message_quota=5), 1)
    await pod.allowances.stop()


async def test_a_new_period_starts_from_nothing() -> None:
    now = [NOW]
    quotas = LocalQuotas(lambda app_id: 0, lambda: now[0])
    limits = AppLimits(message_quota=2, message_quota_period="hour")
    for _ in range(2):
        await quotas.acquire("app", limits, 1)
    with pytest.raises(MessageQuotaExceeded) as refused:
        await quotas.acquire("app", limits, 1)
    assert refused.value.headers == {"retry-after": "3601"}
    now[0] += 3600
    await quotas.acquire("app", limits, 2)


async def test_a_socket_that_stops_waiting_leaves_the_reservation_to_the_others() -> None:
    """A held socket whose tunnel closes stops waiting; the reservation it waited for
    is shared with other sockets and pushes of the app on this pod."""
    ledger = Ledger(itertools.repeat(5))
    pod = PodQuotas(Allowances(ledger, "pod", lambda: NOW))
    limits = AppLimits(message_quota=10)
    held = pod.check("app", limits)
    assert not isinstance(held, bool)
    gives_up = asyncio.ensure_future(held)
    sends = asyncio.ensure_future(pod.acquire("app", limits, 1))
    await asyncio.sleep(0)
    gives_up.cancel()
    await sends  # not cancelled with it
    await pod.allowances.stop()
    [fields] = ledger.fields.values()
    assert fields["used"] == 1

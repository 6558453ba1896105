"""Short chaos runs: three pods, a real redis-server and business server, steady load from
40 tunnels (5 messages/s each) and pushes through the API, and one fault per test
(``tests/support/chaos.py`` describes the run; ``bench/chaos.py`` runs the full sizes).

Each asserts what the broker promises whatever the fault (docs/api.md, "Guarantees"): no
message lost other than those in flight at the fault (frames a client wrote to a socket
that then broke, which no raw WebSocket client can know the pod had read), none
reordered for a business server that drops redeliveries by event id, none delivered
outside its tunnel's connected..closed, every ``tunnel.connected`` followed by exactly
one ``tunnel.closed``, and every tunnel caught up after the fault. The row printed is the
scenario's result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import SCENARIOS, ChaosResult, Load, run_scenario
from tests.support.redis_server import RedisServer

SHORT = Load(tunnels=40, push_rate=10.0, warmup=2.0, after_min=2.0, after_max=30.0)
# Faults that leave the pods and Redis alone: nothing may be lost, in flight or not, and
# every push the API accepted reaches its client ("Pushes still arrive", docs/api.md).
BUSINESS_ONLY = {"business_down_60s", "business_slow", "business_500", "business_garbage"}
# Beyond the brief's list, two faults the full runs showed the broker mishandling: a pod
# paused longer than a lease (a GC or VM pause, a starved CPU: it happened by itself in a
# 300-tunnel run), and Redis stalling while every client reconnects (it needs 100 tunnels
# to show; bounded shorter, since a stalled run waits out its deadlines).
BURST = Load(tunnels=100, warmup=2.0, after_min=2.0, after_max=20.0, settle_timeout=30.0)
BEYOND = [("pod_frozen", SHORT), ("redis_frozen_while_connecting", BURST)]


def report(result: ChaosResult) -> str:
    return f"\n{ChaosResult.HEADER}\n{result.row()}\n{result.details()}"


def assert_promises_kept(result: ChaosResult, load: Load) -> None:
    v = result.verdict
    assert v.sent >= load.tunnels * load.rate * (load.warmup + result.fault_seconds) * 0.5
    assert v.pushes_sent > 0, "the pusher pushed nothing"
    assert result.settled, report(result)
    assert v.lost_otherwise == 0, report(result)
    assert v.pushes_lost_otherwise == 0, report(result)
    assert v.out_of_order == 0, report(result)
    assert v.outside_lifecycle == 0, report(result)
    assert v.unpaired == [], report(result)
    assert v.punished == [], report(result)
    assert result.recovery is not None, report(result)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_one_fault_under_steady_load(
    name: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    result = await run_scenario(name, tmp_path, redis_server, SHORT)
    print(report(result))
    assert_promises_kept(result, SHORT)
    if name in BUSINESS_ONLY:
        v = result.verdict
        assert v.lost == 0, report(result)
        assert v.pushes_sent == v.pushes_received, report(result)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("name", "load"), BEYOND, ids=[name for name, _ in BEYOND])
async def test_a_fault_beyond_the_list(
    name: str, load: Load, tmp_path: Path, redis_server: RedisServer
) -> None:
    result = await run_scenario(name, tmp_path, redis_server, load)
    print(report(result))
    assert_promises_kept(result, load)

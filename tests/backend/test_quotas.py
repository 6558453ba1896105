"""An app's quotas, checked against both backends (two pods sharing a real redis-server,
or the one memory process): ``max_tunnels`` at the registration, the app's index of
open tunnels through takeovers, reaping, rejoining and a Redis that lost everything,
and the message quota across pods and periods (``backend/quotas.py``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.backend.test_backend_contract import APP, Cluster, ids_of, make_app, new_client
from tests.support.redis_server import RedisServer
from tunnel_broker.apps import App, AppLimits
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.backend import RedisBackend
from tunnel_broker.errors import BackendUnavailable, MessageQuotaExceeded, TunnelQuotaExceeded
from tunnel_broker.usage.periods import hour_name

CAPPED = make_app("capped", max_tunnels=3)


@pytest.fixture(params=["memory", "redis"])
async def pods(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The contract tests' pods: two on one Redis, or the one memory process."""
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    cluster = Cluster(request.param, url)
    try:
        yield cluster
    finally:
        await cluster.aclose()


async def counts(pods: Cluster) -> list[int]:
    return [await pod.backend.count_app(CAPPED.id) for pod in await pods.pods()]


async def test_a_new_tunnel_beyond_max_tunnels_is_refused_on_any_pod(pods: Cluster) -> None:
    a, b = await pods.pods()
    await a.connect("t1", app=CAPPED)
    await b.connect("t2", "u2", app=CAPPED)
    await a.connect("t3", "u3", app=CAPPED)
    assert await counts(pods) == [3, 3]
    for pod in (a, b):
        with pytest.raises(TunnelQuotaExceeded):
            await pod.backend.attach(new_client("t4", "u4", app=CAPPED).tunnel)
    assert await counts(pods) == [3, 3]

    # A takeover is no new tunnel, on this pod or another.
    assert await b.backend.attach(new_client("t1", app=CAPPED).tunnel) is True
    assert await a.backend.attach(new_client("t2", "u2", app=CAPPED).tunnel) is True
    assert await counts(pods) == [3, 3]
    await pods.settle()

    # One closes: one more fits.
    t3 = a.hub.get(CAPPED.id, "t3")
    assert t3 is not None
    await a.backend.detach(t3)
    assert await counts(pods) == [2, 2]
    await b.connect("t4", "u4", app=CAPPED)
    assert sorted(ids_of(await a.backend.list_app(CAPPED.id, None, 10))) == ["t1", "t2", "t4"]
    # Other apps are not counted.
    await a.connect("t9", app=APP)
    assert await counts(pods) == [3, 3]


async def test_list_app_pages_through_every_pods_tunnels(pods: Cluster) -> None:
    a, b = await pods.pods()
    for i in range(5):
        await (a if i % 2 else b).connect(f"t{i}", f"u{i}")
    await a.connect("x", app=CAPPED)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await b.backend.list_app(APP.id, cursor, 2)
        assert len(page.records) <= 2
        seen += ids_of(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"t{i}" for i in range(5)]
    assert {r.node_id for r in (await a.backend.list_app(APP.id, None, 10)).records} == (
        {"a", "b"} if pods.multi_pod else {"a"}
    )


async def test_an_app_whose_max_tunnels_changes_is_held_to_the_new_one(pods: Cluster) -> None:
    a, b = await pods.pods()
    wider = App.model_validate({**CAPPED.model_dump(), "limits": {"max_tunnels": 4}})
    for i in range(3):
        await a.connect(f"t{i}", f"u{i}", app=CAPPED)
    await b.connect("t3", "u3", app=wider)
    narrower = App.model_validate({**CAPPED.model_dump(), "limits": {"max_tunnels": 2}})
    with pytest.raises(TunnelQuotaExceeded):
        await b.backend.attach(new_client("t5", "u5", app=narrower).tunnel)


# ---- Redis: the index stays exact -------------------------------------------------------


def redis_pods(pods: Cluster) -> None:
    if not pods.multi_pod:
        pytest.skip("Redis only")


async def test_each_registration_raises_the_hours_peak(pods: Cluster) -> None:
    redis_pods(pods)
    a, b = await pods.pods()
    clients = [await a.connect("t1", app=CAPPED), await b.connect("t2", "u2", app=CAPPED)]
    await a.backend.detach(clients[0].tunnel)
    await a.connect("t3", "u3", app=CAPPED)
    bucket = keys.usage(CAPPED.id, hour_name(time.time()))
    assert await pods.redis().hget(bucket, "peak_tunnels") == "2"
    await b.connect("t4", "u4", app=CAPPED)
    assert await pods.redis().hget(bucket, "peak_tunnels") == "3"
    assert 0 < await pods.redis().ttl(bucket) <= 35 * 86400


async def test_a_dead_pods_tunnels_free_their_places_when_it_is_reaped(pods: Cluster) -> None:
    redis_pods(pods)
    a, b = await pods.pods()
    await a.connect("t1", app=CAPPED)
    await b.connect("t2", "u2", app=CAPPED)
    await b.connect("t3", "u3", app=CAPPED)
    assert isinstance(a.backend, RedisBackend)
    await a.backend.leases.reap("b")  # b is gone (its lease ran out)
    pods.lost.clear()
    assert await counts(pods) == [1, 1]
    await a.connect("t4", "u4", app=CAPPED)
    await a.connect("t5", "u5", app=CAPPED)
    with pytest.raises(TunnelQuotaExceeded):
        await a.backend.attach(new_client("t6", "u6", app=CAPPED).tunnel)


async def test_a_pod_back_from_being_reaped_counts_its_sockets_again(pods: Cluster) -> None:
    """Its open sockets rejoin (never closed for their clients): counted again, even
    beyond the quota, which then refuses new tunnels until the count is below it."""
    redis_pods(pods)
    a, b = await pods.pods()
    await b.connect("t1", app=CAPPED)
    await b.connect("t2", "u2", app=CAPPED)
    assert isinstance(a.backend, RedisBackend) and isinstance(b.backend, RedisBackend)
    await a.backend.leases.reap("b")
    pods.lost.clear()
    await a.connect("t3", "u3", app=CAPPED)
    await a.connect("t4", "u4", app=CAPPED)
    await b.backend.rejoin.rejoin(b.hub, {})
    assert await counts(pods) == [4, 4]
    with pytest.raises(TunnelQuotaExceeded):
        await a.backend.attach(new_client("t5", "u5", app=CAPPED).tunnel)


async def test_a_redis_that_lost_everything_gets_the_index_back(pods: Cluster) -> None:
    redis_pods(pods)
    a, b = await pods.pods()
    await a.connect("t1", app=CAPPED)
    await b.connect("t2", "u2", app=CAPPED)
    await pods.redis().flushall()
    for pod in (a, b):
        assert isinstance(pod.backend, RedisBackend)
        await pod.backend.registry.reconcile([(t, pod.backend.conn(t)) for t in pod.hub])
    assert await counts(pods) == [2, 2]


async def test_an_entry_without_a_record_is_pruned_at_the_quota(pods: Cluster) -> None:
    """Left by a pod of a release without the index (a rolling upgrade): at the quota the
    registration looks for such entries and drops them."""
    redis_pods(pods)
    a, b = await pods.pods()
    await a.connect("t1", app=CAPPED)
    await pods.redis().zadd(keys.app_index(CAPPED.id), {"gone1": 0, "gone2": 0})
    await b.connect("t2", "u2", app=CAPPED)
    await b.connect("t3", "u3", app=CAPPED)
    assert await counts(pods) == [3, 3]
    with pytest.raises(TunnelQuotaExceeded):
        await a.backend.attach(new_client("t4", "u4", app=CAPPED).tunnel)


# ---- messages -----------------------------------------------------------------------------


async def test_the_message_quota_counts_every_pod_and_starts_again_each_period(
    pods: Cluster,
) -> None:
    a, b = await pods.pods()
    now = [time.time() // 3600 * 3600 + 10]
    for pod in (a, b):
        pod.backend.quotas.clock = lambda: now[0]
        if isinstance(pod.backend, RedisBackend):
            pod.backend.quotas.allowances.idle_seconds = 0.05  # quick to give back
    limits = AppLimits(message_quota=25, message_quota_period="hour")
    admitted = 0
    for i in range(40):
        try:
            await (a if i % 3 else b).backend.quotas.acquire("q", limits, 1)
        except MessageQuotaExceeded as refused:
            assert i >= 25
            assert refused.headers["retry-after"] == str(3600 - 10 + 1)
        else:
            admitted += 1
    assert admitted == 25
    for pod in (a, b):
        assert pod.backend.quotas.check("q", limits) is False
    # Raised while running: the room it made, not more.
    raised = AppLimits(message_quota=27, message_quota_period="hour")
    await b.backend.quotas.acquire("q", raised, 2)
    with pytest.raises(MessageQuotaExceeded):
        await a.backend.quotas.acquire("q", raised, 1)

    now[0] += 3600  # the next hour
    await a.backend.quotas.acquire("q", limits, 20)
    await b.backend.quotas.acquire("q", limits, 5)
    with pytest.raises(MessageQuotaExceeded):
        await b.backend.quotas.acquire("q", limits, 1)


async def test_without_redis_a_pod_spends_what_it_reserved_then_waits(pods: Cluster) -> None:
    """Pushes are answered 503 once the pod's reservation is spent; a client's message
    waits (its socket is held) rather than be refused or relayed beyond the quota."""
    redis_pods(pods)
    a, _ = await pods.pods()
    assert isinstance(a.backend, RedisBackend)
    limits = AppLimits(message_quota=10_000, message_quota_period="day")
    for _ in range(3):
        await a.backend.quotas.acquire("q", limits, 1)  # reserves a chunk
    a.backend.health.mark_unhealthy(RedisTimeoutError("gone"))
    spent = 0
    with pytest.raises(BackendUnavailable):
        for _ in range(10_000):
            await a.backend.quotas.acquire("q", limits, 1)
            spent += 1
    assert 0 < spent < 1000
    waiting = a.backend.quotas.check("q", limits)
    assert not isinstance(waiting, bool)
    await waiting  # does not raise: the reader asks again after it
    a.backend.health.mark_healthy()
    await a.backend.quotas.acquire("q", limits, 1)

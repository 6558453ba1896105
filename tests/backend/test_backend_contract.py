"""The contract of ``Backend``, checked against every implementation.

Each test runs once with ``MemoryBackend`` and once with ``RedisBackend`` on a real
redis-server. A test asks its ``Cluster`` for pods: with Redis these are two backends
("a" and "b", each with its own hub) sharing one Redis, so a tunnel on one pod is pushed
to, closed and queried from the other; the memory backend is a single process, so both
pods are the same one (cases that only exist across pods are skipped for it).

Clients are fake ASGI sockets that record what the broker sends them. Pub/sub between
Redis pods is asynchronous: ``Cluster.settle`` waits until every pod has applied every
message published so far (a barrier message published last is applied last), so
"exactly once" and "not at all" are checked after everything in flight has landed.
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for
from tunnel_broker.apps import App, parse_apps
from tunnel_broker.backend.base import Backend, Page, TunnelRecord
from tunnel_broker.backend.memory import MemoryBackend
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.backend import RedisBackend
from tunnel_broker.errors import BackendUnavailable, TooManyGroups, TooManyTunnels
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.tunnels.tunnel import Tunnel

LEASE_SECONDS = 2.0
WAIT_SECONDS = 5.0  # an upper bound only: polls return as soon as the condition holds


def make_app(app_id: str, **limits: Any) -> App:
    (app,) = parse_apps(
        [
            {
                "id": app_id,
                "api_keys": ["tbk_" + os.urandom(12).hex()],
                "webhook_url": "http://127.0.0.1:9/hook",
                "webhook_secrets": ["whsec_" + base64.b64encode(os.urandom(32)).decode()],
                "limits": limits,
            }
        ]
    )
    return app


APP = make_app("demo")
OTHER_APP = make_app("other")


class FakeSocket:
    """The send side of one client's socket: every ASGI message the broker sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))

    def payloads(self) -> list[str | bytes]:
        return [
            m["text"] if "text" in m else m["bytes"]
            for m in self.sent
            if m["type"] == "websocket.send"
        ]

    def closes(self) -> list[tuple[int, str]]:
        return [(m["code"], m["reason"]) for m in self.sent if m["type"] == "websocket.close"]


@dataclass
class Client:
    tunnel: Tunnel
    socket: FakeSocket

    @property
    def tunnel_id(self) -> str:
        return self.tunnel.tunnel_id


def new_client(
    tunnel_id: str,
    user_id: str = "u1",
    groups: tuple[str, ...] = (),
    app: App = APP,
    identity: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Client:
    socket = FakeSocket()
    tunnel = Tunnel(
        app,
        tunnel_id,
        user_id,
        identity if identity is not None else {"name": user_id},
        meta if meta is not None else {},
        set(groups),
        b"",
        socket.send,
    )
    return Client(tunnel, socket)


@dataclass
class Pod:
    node_id: str
    hub: Hub
    backend: Backend
    barriers_seen: int = 0

    async def connect(
        self,
        tunnel_id: str,
        user_id: str = "u1",
        groups: tuple[str, ...] = (),
        app: App = APP,
    ) -> Client:
        """A new tunnel attached on this pod (not a takeover)."""
        client = new_client(tunnel_id, user_id, groups, app)
        assert await self.backend.attach(client.tunnel) is False
        return client


@dataclass
class Cluster:
    kind: str
    redis_url: str | None = None
    lost: list[tuple[str, str]] = field(default_factory=list)
    _pods: dict[str, Pod] = field(default_factory=dict)
    _client: aioredis.Redis | None = None

    @property
    def multi_pod(self) -> bool:
        return self.redis_url is not None

    def require_multi_pod(self) -> None:
        if not self.multi_pod:
            pytest.skip("the memory backend is a single process: there is no other pod")

    async def pod(self, node_id: str) -> Pod:
        if node_id in self._pods:
            return self._pods[node_id]
        hub = Hub()
        if self.redis_url is None:
            pod = Pod(node_id, hub, MemoryBackend(hub, node_id))
        else:
            backend = RedisBackend(
                self.redis_url,
                hub,
                node_id,
                report_lost=lambda app_id, tunnel_id, *_: self.lost.append((app_id, tunnel_id)),
                lease_seconds=LEASE_SECONDS,
            )
            pod = Pod(node_id, hub, backend)

            async def barrier_seen() -> None:
                pod.barriers_seen += 1

            backend.on_apps_changed = barrier_seen
            await backend.start()
            assert backend.ready()
            subscribed: bool = await check_for(
                WAIT_SECONDS,
                lambda: self._subscribed(node_id),
                what=f"pod {node_id} to subscribe",
            )
            assert subscribed
        self._pods[node_id] = pod
        return pod

    async def pods(self) -> tuple[Pod, Pod]:
        """Two pods sharing state; for the memory backend, the one pod twice."""
        first = await self.pod("a")
        return first, await self.pod("b" if self.multi_pod else "a")

    def redis(self) -> aioredis.Redis:
        assert self.redis_url is not None
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._client

    async def _subscribed(self, node_id: str) -> bool:
        counts = await self.redis().pubsub_numsub(keys.node_channel(node_id))
        return any(count >= 1 for _, count in counts)

    async def settle(self) -> None:
        """Wait until every pod applied every pub/sub message published before now.

        A pod's subscriber applies messages one at a time in the order Redis delivers
        them, so once it has seen a barrier published now (on the apps-changed channel,
        observed through ``on_apps_changed``) it has applied everything published before."""
        if not self.multi_pod:
            return
        before = {node_id: pod.barriers_seen for node_id, pod in self._pods.items()}
        await self.redis().publish(keys.APPS_CHANGED, "barrier")
        await check_for(
            WAIT_SECONDS,
            lambda: all(self._pods[n].barriers_seen > seen for n, seen in before.items()),
            what="every pod to apply the messages in flight",
        )

    async def aclose(self) -> None:
        for pod in self._pods.values():
            await pod.backend.stop()
        if self._client is not None:
            await self._client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    pods = Cluster(request.param, url)
    try:
        yield pods
        assert pods.lost == [], "a live pod's tunnels were reported lost"
    finally:
        await pods.aclose()


def ids_of(page: Page) -> list[str]:
    return [record.tunnel_id for record in page.records]


async def all_pages(
    list_page: Callable[[str, str, str | None, int], Awaitable[Page]], name: str, limit: int
) -> list[Page]:
    """Every page of ``list_user`` or ``list_group``, following ``next_cursor``."""
    pages: list[Page] = []
    cursor: str | None = None
    for _ in range(100):
        page = await list_page(APP.id, name, cursor, limit)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
    raise AssertionError("paging never ended")


# ---- attach and presence ----------------------------------------------------------------


async def test_attach_of_new_tunnel_is_found_by_get_and_list_user(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    client = new_client(
        "t1", "u1", ("g2", "g1"), identity={"name": "Ann", "n": 1}, meta={"device": "ios"}
    )

    assert await a.backend.attach(client.tunnel) is False

    expected = TunnelRecord(
        "t1",
        "u1",
        {"name": "Ann", "n": 1},
        {"device": "ios"},
        ("g1", "g2"),
        client.tunnel.connected_at,
        "a",
    )
    for pod in (a, b):
        assert await pod.backend.get(APP.id, "t1") == expected
        assert ids_of(await pod.backend.list_user(APP.id, "u1", None, 10)) == ["t1"]
        assert (await pod.backend.list_user(APP.id, "u1", None, 10)).next_cursor is None
        assert ids_of(await pod.backend.list_user(APP.id, "u2", None, 10)) == []
        assert await pod.backend.get(APP.id, "ghost") is None
        assert await pod.backend.get(OTHER_APP.id, "t1") is None
    assert client.socket.sent == []


async def test_detached_tunnel_is_gone_from_presence(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    gone = await a.connect("t1", "u1", ("g",))
    await b.connect("t2", "u1", ("g",))

    await a.backend.detach(gone.tunnel)

    for pod in (a, b):
        assert await pod.backend.get(APP.id, "t1") is None
        assert ids_of(await pod.backend.list_user(APP.id, "u1", None, 10)) == ["t2"]
        assert ids_of(await pod.backend.list_group(APP.id, "g", None, 10)) == ["t2"]
        assert await pod.backend.push(APP.id, Target.tunnel("t1"), "hello") == ["t1"]
        assert await pod.backend.join(APP.id, "t1", "h", 100) is False
    await cluster.settle()
    assert gone.socket.payloads() == []


# ---- takeover ------------------------------------------------------------------------------


async def test_attach_with_same_id_takes_over_old_socket(cluster: Cluster) -> None:
    a, _ = await cluster.pods()
    old = await a.connect("t1", "u1", ("g1",))
    old.tunnel.approve()
    assert await a.backend.join(APP.id, "t1", "g2", 100) is True
    new = new_client("t1", "u1", ("g3",))

    assert await a.backend.attach(new.tunnel) is True

    assert old.socket.closes() == [(CloseCode.REPLACED, "replaced")]
    assert old.tunnel.replaced is True
    assert new.socket.sent == []
    assert new.tunnel.replaced is False
    assert new.tunnel.approved.done()  # no new tunnel.connected: the approval carries over
    assert new.tunnel.groups == {"g1", "g2", "g3"}
    record = await a.backend.get(APP.id, "t1")
    assert record is not None
    assert record.groups == ("g1", "g2", "g3")
    assert ids_of(await a.backend.list_user(APP.id, "u1", None, 10)) == ["t1"]
    for group in ("g1", "g2", "g3"):
        assert ids_of(await a.backend.list_group(APP.id, group, None, 10)) == ["t1"]

    assert await a.backend.push(APP.id, Target("groups", ("g2",)), "to-group") == []
    assert await a.backend.push(APP.id, Target.tunnel("t1"), "to-tunnel") == []
    await cluster.settle()
    assert new.socket.payloads() == ["to-group", "to-tunnel"]
    assert old.socket.payloads() == []


async def test_detach_of_replaced_socket_keeps_the_new_one(cluster: Cluster) -> None:
    a, _ = await cluster.pods()
    old = await a.connect("t1", "u1", ("g",))
    new = new_client("t1", "u1")
    assert await a.backend.attach(new.tunnel) is True

    await a.backend.detach(old.tunnel)  # the old socket's reader ends after the 4409

    record = await a.backend.get(APP.id, "t1")
    assert record is not None
    assert record.groups == ("g",)
    assert ids_of(await a.backend.list_user(APP.id, "u1", None, 10)) == ["t1"]
    assert ids_of(await a.backend.list_group(APP.id, "g", None, 10)) == ["t1"]
    assert await a.backend.push(APP.id, Target.tunnel("t1"), "still-here") == []
    assert new.socket.payloads() == ["still-here"]


async def test_takeover_across_pods_closes_socket_on_the_old_pod(cluster: Cluster) -> None:
    cluster.require_multi_pod()
    a, b = await cluster.pods()
    old = await a.connect("t1", "u1", ("g1",))
    old.tunnel.approve()
    assert await b.backend.join(APP.id, "t1", "g2", 100) is True
    new = new_client("t1", "u1", ("g3",))

    assert await b.backend.attach(new.tunnel) is True

    await check_for(WAIT_SECONDS, lambda: old.socket.closes(), what="the old socket to be closed")
    await cluster.settle()
    assert old.socket.closes() == [(CloseCode.REPLACED, "replaced")]
    assert old.tunnel.replaced is True
    assert new.socket.sent == []
    assert new.tunnel.approved.done()
    assert new.tunnel.groups == {"g1", "g2", "g3"}

    # Until the old client answers the 4409, pod a still holds the closing socket: a push
    # made there meanwhile must reach the new socket on pod b, not the closing one.
    assert await a.backend.push(APP.id, Target.tunnel("t1"), "while-closing") == []
    await a.backend.detach(old.tunnel)

    for pod in (a, b):
        record = await pod.backend.get(APP.id, "t1")
        assert record is not None
        assert record.node_id == "b"
        assert record.groups == ("g1", "g2", "g3")
        assert ids_of(await pod.backend.list_user(APP.id, "u1", None, 10)) == ["t1"]
        assert ids_of(await pod.backend.list_group(APP.id, "g1", None, 10)) == ["t1"]
    assert await a.backend.push(APP.id, Target.tunnel("t1"), "via-a") == []
    assert await a.backend.push(APP.id, Target("groups", ("g1",)), "group-via-a") == []
    await cluster.settle()
    assert new.socket.payloads() == ["while-closing", "via-a", "group-via-a"]
    assert old.socket.payloads() == []


# ---- per-user limit -------------------------------------------------------------------------


async def test_user_limit_refuses_new_tunnel_but_not_takeover(cluster: Cluster) -> None:
    app = make_app("limited", max_tunnels_per_user=2)
    a, b = await cluster.pods()
    await a.connect("t1", "u1", app=app)
    second = await b.connect("t2", "u1", app=app)

    for pod in (a, b):
        with pytest.raises(TooManyTunnels):
            await pod.backend.attach(new_client("t3", "u1", app=app).tunnel)
    assert await b.backend.get(app.id, "t3") is None
    assert ids_of(await b.backend.list_user(app.id, "u1", None, 10)) == ["t1", "t2"]

    await a.connect("t3", "u2", app=app)  # another user has a limit of their own
    for pod in (a, b):  # taking over an existing tunnel adds none
        assert await pod.backend.attach(new_client("t1", "u1", app=app).tunnel) is True
    assert ids_of(await a.backend.list_user(app.id, "u1", None, 10)) == ["t1", "t2"]

    await b.backend.detach(second.tunnel)
    await a.connect("t4", "u1", app=app)  # room again
    assert ids_of(await b.backend.list_user(app.id, "u1", None, 10)) == ["t1", "t4"]


# ---- push -----------------------------------------------------------------------------------


async def only_reached(
    cluster: Cluster, reached: list[Client], missed: list[Client], pushed: tuple[str, ...] = ("m",)
) -> None:
    """Each of ``reached`` got ``pushed`` once, in order; none of ``missed`` got anything."""
    await cluster.settle()
    assert [c.socket.payloads() for c in reached] == [list(pushed)] * len(reached)
    assert [c.socket.payloads() for c in missed] == [[]] * len(missed)


@pytest.mark.parametrize("payload", ["hello", b"\x00\xffbytes"], ids=["text", "bytes"])
async def test_push_to_tunnels_delivers_and_returns_those_not_connected(
    cluster: Cluster, payload: str | bytes
) -> None:
    a, b = await cluster.pods()
    here = await a.connect("t1", "u1")
    there = await b.connect("t2", "u2")
    bystander = await a.connect("t3", "u1")

    target = Target("tunnels", ("t1", "ghost", "t2", "t1", "ghost"))
    assert await a.backend.push(APP.id, target, payload) == ["ghost"]
    assert await b.backend.push(APP.id, Target.tunnel("t1"), payload) == []
    assert await a.backend.push(APP.id, Target.tunnel("t2"), payload) == []
    assert await a.backend.push(APP.id, Target("tunnels", ("x", "y")), payload) == ["x", "y"]
    assert await a.backend.push(OTHER_APP.id, Target.tunnel("t1"), payload) == ["t1"]

    await cluster.settle()
    assert here.socket.payloads() == [payload, payload]
    assert there.socket.payloads() == [payload, payload]
    assert bystander.socket.payloads() == []


async def test_push_to_users_reaches_each_of_their_tunnels_once(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    reached = [
        await a.connect("t1", "u1"),
        await b.connect("t2", "u1"),
        await a.connect("t3", "u2"),
        await b.connect("t4", "u2"),
    ]
    missed = [
        await a.connect("t5", "u3"),
        await b.connect("t6", "u3"),
        await a.connect("t1", "u1", app=OTHER_APP),
    ]

    assert await a.backend.push(APP.id, Target("users", ("u1", "u2", "u1", "nobody")), "m") == []

    await only_reached(cluster, reached, missed)


async def test_push_to_groups_reaches_each_member_once(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    reached = [
        await a.connect("t1", "u1", ("g1", "g2")),
        await b.connect("t2", "u1", ("g2",)),
        await b.connect("t3", "u2", ("g1", "g2", "g3")),
        await a.connect("t4", "u2", ("g1",)),
    ]
    missed = [
        await a.connect("t5", "u1", ("g3",)),
        await b.connect("t6", "u3"),
        await a.connect("t1", "u1", ("g1",), app=OTHER_APP),
    ]

    assert await b.backend.push(APP.id, Target("groups", ("g1", "g2", "empty")), "m") == []

    await only_reached(cluster, reached, missed)


async def test_push_to_all_reaches_every_tunnel_of_the_app_once(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    reached = [
        await a.connect("t1", "u1", ("g1",)),
        await b.connect("t2", "u1"),
        await a.connect("t3", "u2"),
        await b.connect("t4", "u3", ("g1", "g2")),
    ]
    missed = [await a.connect("t1", "u1", app=OTHER_APP), await b.connect("t5", app=OTHER_APP)]

    assert await a.backend.push(APP.id, Target("all"), "everyone") == []
    assert await b.backend.push(APP.id, Target("all"), "again") == []

    await only_reached(cluster, reached, missed, ("everyone", "again"))


async def test_a_push_a_deaf_pod_missed_is_refused_after_an_outage_only(
    cluster: Cluster,
) -> None:
    """Pub/sub keeps nothing for a pod not subscribed (reconnecting after Redis restarted):
    in the lease after an outage the caller hears 503, not that the push was done."""
    cluster.require_multi_pod()
    a, b = await cluster.pods()
    on_a, on_b = await a.connect("t1", "u1"), await b.connect("t2", "u1")
    assert isinstance(a.backend, RedisBackend) and isinstance(b.backend, RedisBackend)
    await a.backend.leases.reap_expired()  # a's last look at the leases: a and b
    assert a.backend.leases.peers == {"a", "b"}
    (listening,) = [t for t in b.backend._tasks if t.get_name() == "redis-subscriber"]
    listening.cancel()

    async def deaf() -> bool:
        return not await cluster._subscribed("b")

    assert await check_for(WAIT_SECONDS, deaf, what="pod b to unsubscribe")

    a.backend.health.healthy_since = time.monotonic()  # Redis reachable again just now
    with pytest.raises(BackendUnavailable, match="reached 1 of 2 pods"):
        await a.backend.push(APP.id, Target("users", ("u1",)), "to u1")
    with pytest.raises(BackendUnavailable, match="pod b is reconnecting"):
        await a.backend.push(APP.id, Target.tunnel("t2"), "to t2")
    with pytest.raises(BackendUnavailable, match="reached 1 of 2 pods"):
        await a.backend.close(APP.id, Target("all"), 1000, "bye")
    assert on_a.socket.payloads() == ["to u1"]  # this pod's share is pushed all the same

    # A lease later a pod still not listening is a dead one: its tunnels are gone with it.
    a.backend.health.healthy_since -= LEASE_SECONDS
    assert await a.backend.push(APP.id, Target.tunnel("t2"), "to t2") == ["t2"]
    assert await a.backend.push(APP.id, Target("users", ("u1",)), "again") == []
    assert on_b.socket.payloads() == []


async def test_a_takeover_redis_answered_late_stands_and_is_announced_when_it_answers(
    cluster: Cluster,
) -> None:
    """Redis answers a takeover's write after another call took it for unreachable (it
    stalled), so the announcement cannot go out: the takeover stands all the same (its
    record names the new socket already), and the old pod hears of it once Redis is
    reachable again (chaos run, Redis frozen while every client reconnects)."""
    cluster.require_multi_pod()
    a, b = await cluster.pods()
    first = await a.connect("t1", "u1")
    assert isinstance(b.backend, RedisBackend)
    registry = b.backend.registry
    write = registry.write

    async def answered_late(*args: Any, **kwargs: Any) -> Any:
        written = await write(*args, **kwargs)
        b.backend.health.mark_unhealthy(RedisTimeoutError("another call timed out"))
        return written

    registry.write = answered_late  # type: ignore[method-assign]
    second = new_client("t1", "u1")
    assert await b.backend.attach(second.tunnel) is True
    registry.write = write  # type: ignore[method-assign]
    assert b.hub.get(APP.id, "t1") is second.tunnel
    assert first.socket.closes() == []
    # b's lease loop finds Redis reachable, repairs, and announces the takeover.
    replaced = await check_for(
        WAIT_SECONDS, lambda: first.socket.closes(), what="the old socket's 4409"
    )
    assert replaced == [(CloseCode.REPLACED, "replaced")]


async def test_a_new_socket_where_this_pod_has_a_record_but_no_socket_begins_anew(
    cluster: Cluster,
) -> None:
    """A record naming this pod and a socket no longer open here (it ended, or its
    takeover could not be announced) is not continued by a new socket: that one is a new
    connection (reported connected) with a life of its own, so a pod that closed the
    tunnel without Redis hearing of it does not report it connected again."""
    cluster.require_multi_pod()
    _, b = await cluster.pods()
    assert isinstance(b.backend, RedisBackend)
    ended = new_client("t1", "u1")
    await b.backend.registry.write(ended.tunnel, "ended-socket", here=False)
    retried = new_client("t1", "u1")
    assert await b.backend.attach(retried.tunnel) is False
    life = await cluster.redis().hget(keys.tunnel(APP.id, "t1"), "life")
    assert life == b.backend.conn(retried.tunnel)


async def test_a_takeover_keeps_the_life_its_tunnel_began_with(cluster: Cluster) -> None:
    """A record's life names the socket whose ``tunnel.connected`` began the lifecycle,
    through any takeovers; a pod that closed a socket without Redis hearing of it tells
    by that whether the tunnel was taken over from it (``unrecorded.py``)."""
    cluster.require_multi_pod()
    a, b = await cluster.pods()

    async def life() -> str:
        return str(await cluster.redis().hget(keys.tunnel(APP.id, "t1"), "life"))

    first = await a.connect("t1", "u1")
    began = a.backend.conn(first.tunnel)
    assert await life() == began
    second = new_client("t1", "u1")
    assert await b.backend.attach(second.tunnel) is True
    assert await life() == began
    await b.backend.detach(second.tunnel)  # closed: the next connect begins anew
    again = await b.connect("t1", "u1")
    assert await life() == b.backend.conn(again.tunnel) != began


# ---- groups ---------------------------------------------------------------------------------


async def test_join_and_leave_of_unknown_tunnel_return_false(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    await a.connect("t1", "u1", app=OTHER_APP)  # same id, other app

    for pod in (a, b):
        assert await pod.backend.join(APP.id, "t1", "g", 100) is False
        assert await pod.backend.leave(APP.id, "t1", "g") is False
        assert ids_of(await pod.backend.list_group(APP.id, "g", None, 10)) == []
    record = await a.backend.get(OTHER_APP.id, "t1")
    assert record is not None
    assert record.groups == ()


async def test_join_and_leave_change_group_membership_and_pushes(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    member = await a.connect("t1", "u1", ("old",))
    bystander = await b.connect("t2", "u1")

    assert await b.backend.join(APP.id, "t1", "g", 100) is True
    assert await a.backend.join(APP.id, "t1", "g", 100) is True  # joining twice changes nothing

    for pod in (a, b):
        record = await pod.backend.get(APP.id, "t1")
        assert record is not None
        assert record.groups == ("g", "old")
        assert ids_of(await pod.backend.list_group(APP.id, "g", None, 10)) == ["t1"]
    assert await b.backend.push(APP.id, Target("groups", ("g",)), "joined") == []
    await cluster.settle()
    assert member.socket.payloads() == ["joined"]

    assert await b.backend.leave(APP.id, "t1", "g") is True

    for pod in (a, b):
        record = await pod.backend.get(APP.id, "t1")
        assert record is not None
        assert record.groups == ("old",)
        assert ids_of(await pod.backend.list_group(APP.id, "g", None, 10)) == []
        assert ids_of(await pod.backend.list_group(APP.id, "old", None, 10)) == ["t1"]
    assert await b.backend.push(APP.id, Target("groups", ("g",)), "left") == []
    assert await a.backend.push(APP.id, Target("groups", ("g",)), "left") == []
    await cluster.settle()
    assert member.socket.payloads() == ["joined"]
    assert bystander.socket.payloads() == []
    assert member.tunnel.groups == {"old"}


# ---- paging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [6, 7])
async def test_list_user_pages_every_tunnel_once_in_id_order(cluster: Cluster, count: int) -> None:
    a, b = await cluster.pods()
    tunnel_ids = [f"t{i:02d}" for i in range(count)]
    random.Random(count).shuffle(tunnel_ids)
    for index, tunnel_id in enumerate(tunnel_ids):
        await (a if index % 2 else b).connect(tunnel_id, "pager")
    await a.connect("t00", "someone-else", app=OTHER_APP)
    await a.connect("x", "someone-else")

    for pod in (a, b):
        pages = await all_pages(pod.backend.list_user, "pager", limit=3)
        assert [len(page.records) for page in pages] == [3, 3] + ([1] if count == 7 else [])
        assert [i for page in pages for i in ids_of(page)] == sorted(tunnel_ids)
        assert {r.user_id for page in pages for r in page.records} == {"pager"}

        whole = await pod.backend.list_user(APP.id, "pager", None, count)
        assert ids_of(whole) == sorted(tunnel_ids)
        assert whole.next_cursor is None


@pytest.mark.parametrize("count", [6, 7])
async def test_list_group_pages_every_tunnel_once_in_id_order(cluster: Cluster, count: int) -> None:
    a, b = await cluster.pods()
    tunnel_ids = [f"t{i:02d}" for i in range(count)]
    random.Random(count).shuffle(tunnel_ids)
    for index, tunnel_id in enumerate(tunnel_ids):
        pod = a if index % 2 else b
        if index % 3:
            await pod.connect(tunnel_id, f"u{index}", ("pages",))
        else:
            await pod.connect(tunnel_id, f"u{index}")
            assert await (b if index % 2 else a).backend.join(APP.id, tunnel_id, "pages", 100)
    await a.connect("t00", "u1", ("pages",), app=OTHER_APP)
    await b.connect("x", "u1", ("other-group",))

    for pod in (a, b):
        pages = await all_pages(pod.backend.list_group, "pages", limit=3)
        assert [len(page.records) for page in pages] == [3, 3] + ([1] if count == 7 else [])
        assert [i for page in pages for i in ids_of(page)] == sorted(tunnel_ids)
        assert all("pages" in r.groups for page in pages for r in page.records)


# ---- close ----------------------------------------------------------------------------------


async def test_close_of_tunnel_closes_its_socket_and_counts_it(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    here = await a.connect("t1", "u1")
    there = await b.connect("t2", "u1")
    bystander = await a.connect("t3", "u1")

    assert await b.backend.close(APP.id, Target.tunnel("t1"), 4000, "bye") == 1
    assert await a.backend.close(APP.id, Target.tunnel("t2"), 1000, "done") == 1
    assert await a.backend.close(APP.id, Target.tunnel("ghost"), 4000, "bye") == 0
    assert await a.backend.close(OTHER_APP.id, Target.tunnel("t3"), 4000, "bye") == 0

    await cluster.settle()
    assert here.socket.closes() == [(4000, "bye")]
    assert there.socket.closes() == [(1000, "done")]
    assert bystander.socket.closes() == []


async def test_close_of_user_closes_all_their_tunnels(cluster: Cluster) -> None:
    a, b = await cluster.pods()
    closed = [
        await a.connect("t1", "u1"),
        await b.connect("t2", "u1", ("g",)),
        await a.connect("t3", "u1"),
    ]
    spared = [
        await b.connect("t4", "u2", ("g",)),
        await a.connect("t1", "u1", app=OTHER_APP),
    ]

    assert await b.backend.close(APP.id, Target("users", ("u1",)), 4001, "kicked") == 3

    await cluster.settle()
    assert [c.socket.closes() for c in closed] == [[(4001, "kicked")]] * len(closed)
    assert [c.socket.closes() for c in spared] == [[]] * len(spared)
    assert await a.backend.close(APP.id, Target("users", ("nobody",)), 4001, "kicked") == 0


async def test_join_beyond_the_group_limit_is_refused_and_changes_nothing(
    cluster: Cluster,
) -> None:
    a, b = await cluster.pods()
    await a.connect("t1", "u1", ("g1",))
    assert await b.backend.join(APP.id, "t1", "g2", 2) is True
    with pytest.raises(TooManyGroups):
        await b.backend.join(APP.id, "t1", "g3", 2)
    assert await a.backend.join(APP.id, "t1", "g2", 2) is True  # already a member: fine
    await cluster.settle()
    for pod in (a, b):
        record = await pod.backend.get(APP.id, "t1")
        assert record is not None and record.groups == ("g1", "g2")
        assert ids_of(await pod.backend.list_group(APP.id, "g3", None, 10)) == []

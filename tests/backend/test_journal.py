"""The event journal (``backend/redis/journal.py``) on a real redis-server: what a pod
writes, deletes, keeps at a stop, and what another pod adopts, with the owed sets and
the stored-bytes count moving in the same step.

The journal talks to event delivery through a handful of queue methods; ``Queue`` below
is a recording stand-in for them, so that each test controls exactly which events are
queued and acknowledged. Redis is the real one throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.journal import CHUNK, STORE_LAG, EventJournal
from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.batching import Pending
from tunnel_broker.webhooks.delivery import AppEventQueue

APP = "demo"


@dataclass
class Buffer:
    pendings: list[Pending] = field(default_factory=list)

    def undelivered(self) -> list[Pending]:
        return list(self.pendings)


@dataclass
class Queue:
    """The queue methods the journal calls, recording what it was told."""

    app_id: str = APP
    blocked: bool = False
    buffer: Buffer = field(default_factory=Buffer)

    def block(self, blocked: bool) -> None:
        self.blocked = blocked


def as_queue(queue: Queue) -> AppEventQueue:
    return cast(AppEventQueue, queue)


def pending(tunnel_id: str, text: str) -> Pending:
    fragment = events.tunnel_fragment(APP, tunnel_id, "u", {}, {})
    return Pending(events.message(fragment, tunnel_id, text))


def text_of(record: str) -> str:
    body = record.split("\n", 3)[3]
    return str(json.loads(body)["data"])


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


def journal_of(client: aioredis.Redis, node: str, max_bytes: int = 1 << 30) -> EventJournal:
    health = RedisHealth()
    health.mark_healthy()
    return EventJournal(client, node, health, True, lambda app_id: max_bytes)


async def entries(client: aioredis.Redis, node: str) -> list[str]:
    return [text_of(fields["r"]) for _, fields in await client.xrange(keys.journal(APP, node))]


async def stored_bytes(client: aioredis.Redis) -> dict[str, int]:
    return {k: int(v) for k, v in (await client.hgetall(keys.journal_bytes(APP))).items()}


async def write(journal: EventJournal, queue: Queue, *pendings: Pending) -> None:
    for p in pendings:
        queue.buffer.pendings.append(p)
        journal.added(as_queue(queue), p)
    await check_for(5, lambda: all(p.stored for p in pendings), what="events stored")


async def test_events_are_stored_in_order_then_deleted_once_delivered(
    client: aioredis.Redis,
) -> None:
    journal, queue = journal_of(client, "a"), Queue()
    try:
        first, second, third = pending("t1", "1"), pending("t2", "2"), pending("t1", "3")
        await write(journal, queue, first, second, third)
        assert await entries(client, "a") == ["1", "2", "3"]
        sizes = sum(p.entry[1] for p in (first, second, third) if p.entry)
        assert await stored_bytes(client) == {"a": sizes}
        assert await client.sismember(keys.JOURNALS, keys.member(APP, "a"))

        journal.delivered(as_queue(queue), [first, third])

        async def only_second() -> bool:
            return await entries(client, "a") == ["2"]

        await check_for(5, only_second, what="delivered events deleted")
        assert second.entry is not None
        assert await stored_bytes(client) == {"a": second.entry[1]}
    finally:
        await journal.stop()


async def test_an_event_delivered_within_the_write_window_is_never_written(
    client: aioredis.Redis,
) -> None:
    journal, queue = journal_of(client, "a"), Queue()
    try:
        quick, slow = pending("t1", "quick"), pending("t1", "slow")
        for p in (quick, slow):
            journal.added(as_queue(queue), p)
        journal.delivered(as_queue(queue), [quick])
        await check_for(5, lambda: slow.stored, what="the undelivered one written")
        assert quick.stored and quick.entry is None
        assert await entries(client, "a") == ["slow"]
    finally:
        await journal.stop()


async def test_a_gone_pods_journal_is_adopted_with_its_place_on_the_owed_sets(
    client: aioredis.Redis,
) -> None:
    gone, adopter = journal_of(client, "gone"), journal_of(client, "live")
    queue = Queue()
    try:
        await write(gone, queue, pending("t1", "1"), pending("t2", "2"), pending("t1", "3"))
        await client.sadd(keys.owed(APP, "t1"), "gone", "other")
        await client.sadd(keys.owed(APP, "t2"), "gone")
        await client.sadd(keys.owed(APP, "t3"), "gone")  # nothing of t3 left: not touched
        before = await stored_bytes(client)
        await gone.stop()

        adopted = await adopter.adopt("gone", [APP])

        taken = adopted[APP]
        assert [p.event.tunnel_id for p in taken] == ["t1", "t2", "t1"]
        assert all(p.stored and p.entry is not None for p in taken)
        assert await entries(client, "live") == ["1", "2", "3"]
        assert not await client.exists(keys.journal(APP, "gone"))
        assert await client.smembers(keys.owed(APP, "t1")) == {"live", "other"}
        assert await client.smembers(keys.owed(APP, "t2")) == {"live"}
        assert await client.smembers(keys.owed(APP, "t3")) == {"gone"}
        assert await stored_bytes(client) == {"live": before["gone"]}
        assert not await client.sismember(keys.JOURNALS, keys.member(APP, "gone"))
        assert await adopter.exists(APP, ["gone", "live"]) == {"live"}
        assert await adopter.adopt("gone", [APP]) == {}  # a second adopter finds nothing

        # The adopter deletes them like its own once they are delivered.
        adopter.delivered(as_queue(Queue()), taken)

        async def emptied() -> bool:
            return await entries(client, "live") == []

        await check_for(5, emptied)
        assert await stored_bytes(client) == {"live": 0}
    finally:
        await adopter.stop()


async def test_adoption_takes_a_large_journal_in_chunks_in_order(client: aioredis.Redis) -> None:
    gone, adopter = journal_of(client, "gone"), journal_of(client, "live")
    many = [pending(f"t{i % 7}", str(i)) for i in range(CHUNK * 2 + 17)]
    try:
        await write(gone, Queue(), *many)
        adopted = await adopter.adopt("gone", [APP])
        assert [p.event.id for p in adopted[APP]] == [p.event.id for p in many]
        assert await entries(client, "live") == [str(i) for i in range(len(many))]
        assert not await client.exists(keys.journal(APP, "gone"))
    finally:
        await gone.stop()
        await adopter.stop()


async def test_a_restarted_pod_adopts_its_previous_runs_journal_only(
    client: aioredis.Redis,
) -> None:
    previous = journal_of(client, "pod-0")
    await write(previous, Queue(), pending("t1", "old1"), pending("t1", "old2"))
    await previous.stop()
    time.sleep(0.002)  # the new run's ids start at a later millisecond
    current = journal_of(client, "pod-0")
    queue = Queue()
    try:
        await write(current, queue, pending("t2", "new"))
        adopted = await current.adopt("pod-0", [APP])
        assert [text_of(events.to_record(p.event)) for p in adopted[APP]] == ["old1", "old2"]
        # The previous run's entries moved behind the new one, in the same stream.
        assert await entries(client, "pod-0") == ["new", "old1", "old2"]
        assert await current.adopt("pod-0", [APP]) == {}
    finally:
        await current.stop()


async def test_keep_leaves_exactly_the_given_events_and_nothing_when_empty(
    client: aioredis.Redis,
) -> None:
    journal, queue = journal_of(client, "a"), Queue()
    try:
        old = [pending("t1", "1"), pending("t1", "2"), pending("t2", "3")]
        await write(journal, queue, *old)
        left = [old[2], pending("t1", "unstored")]
        await journal.keep(APP, left)
        assert await entries(client, "a") == ["3", "unstored"]
        assert all(p.stored for p in left)
        assert await stored_bytes(client) == {"a": sum(p.entry[1] for p in left if p.entry)}
        assert not await client.exists(keys.journal(APP, "a") + ":new")

        await journal.keep(APP, [])
        assert not await client.exists(keys.journal(APP, "a"))
        assert await stored_bytes(client) == {}
        assert not await client.sismember(keys.JOURNALS, keys.member(APP, "a"))
    finally:
        await journal.stop()


async def test_the_apps_stored_bytes_across_pods_pause_reading_at_the_limit(
    client: aioredis.Redis,
) -> None:
    one = pending("t1", "x" * 600)
    limit = len(events.record_bytes(one.event)) * 2  # two such events reach it
    a, b = journal_of(client, "a", max_bytes=limit), journal_of(client, "b", max_bytes=limit)
    queue_a, queue_b = Queue(), Queue()
    try:
        await write(a, queue_a, one)
        await write(b, queue_b, pending("t2", "x" * 600))
        assert queue_b.blocked  # the app's total, both pods together, is at the limit
        assert not queue_a.blocked  # a has not written since b did
        a.delivered(as_queue(queue_a), [one])
        await check_for(5, lambda: not queue_a.blocked)
        # b had nothing to write: it looks again while blocked.
        await check_for(5, lambda: not queue_b.blocked, what="b unblocked by polling")
    finally:
        await a.stop()
        await b.stop()


async def test_reading_pauses_while_events_wait_too_long_to_be_stored(
    client: aioredis.Redis,
) -> None:
    journal, queue = journal_of(client, "a"), Queue()
    try:
        journal.health.mark_unhealthy(RedisConnectionError("down"))
        early = pending("t1", "early")
        journal.added(as_queue(queue), early)
        assert not queue.blocked  # one event waiting is no reason to stop reading
        late = pending("t1", "late")
        late.queued_at = early.queued_at + STORE_LAG + 0.01
        journal.added(as_queue(queue), late)
        assert queue.blocked
        assert not early.stored and not late.stored

        # Redis back: everything the queue holds is written afresh, and reading resumes.
        queue.buffer.pendings = [early, late]
        journal.health.mark_healthy()
        await journal.rewrite({APP: as_queue(queue)})
        assert await entries(client, "a") == ["early", "late"]
        assert late.stored and not queue.blocked
    finally:
        await journal.stop()


async def test_written_again_events_move_behind_those_adopted(client: aioredis.Redis) -> None:
    # A socket attached here while the gone pod owed its tunnel's events: its (parked)
    # events are newer than those adopted, in the journal too.
    gone, adopter = journal_of(client, "gone"), journal_of(client, "live")
    queue = Queue()
    try:
        newer = pending("t1", "newer")
        await write(adopter, queue, newer)
        await write(gone, Queue(), pending("t1", "older"))
        await gone.stop()
        await adopter.adopt("gone", [APP])
        assert await entries(client, "live") == ["newer", "older"]
        adopter.write_again(as_queue(queue), [newer])
        await check_for(5, lambda: newer.stored, what="written again")

        async def moved() -> bool:
            return await entries(client, "live") == ["older", "newer"]

        await check_for(5, moved, what="the newer event behind the adopted one")
    finally:
        await adopter.stop()


def paused_then_delivered(journal: EventJournal, queue: Queue) -> None:
    """Redis away long enough for reading to pause; back once every event that waited
    was delivered meanwhile (nothing is left to write)."""
    journal.health.mark_unhealthy(RedisConnectionError("down"))
    early, late = pending("t1", "early"), pending("t1", "late")
    late.queued_at = early.queued_at + STORE_LAG + 0.01
    journal.added(as_queue(queue), early)
    journal.added(as_queue(queue), late)
    assert queue.blocked
    journal.delivered(as_queue(queue), [early, late])
    journal.health.mark_healthy()


async def test_a_rewrite_of_nothing_resumes_reading_too(client: aioredis.Redis) -> None:
    # Everything was delivered during the outage: the rewrite has nothing to write, and
    # reading must resume all the same (it once stayed paused for good).
    journal, queue = journal_of(client, "a"), Queue()
    try:
        paused_then_delivered(journal, queue)
        await journal.rewrite({APP: as_queue(queue)})
        assert not queue.blocked
        assert await entries(client, "a") == []
    finally:
        await journal.stop()


async def test_reading_resumes_when_what_waited_was_delivered_before_it_was_written(
    client: aioredis.Redis,
) -> None:
    # Redis back after a pause, and every event that had waited was delivered meanwhile:
    # nothing is left to write, and reading must resume (it once stayed paused for good).
    journal, queue = journal_of(client, "a"), Queue()
    try:
        paused_then_delivered(journal, queue)
        await check_for(5, lambda: not queue.blocked, what="reading resumed")
        assert await entries(client, "a") == []
    finally:
        await journal.stop()

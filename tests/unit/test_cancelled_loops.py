"""A background loop that catches Redis errors still ends when it is cancelled, even if
the library turned the cancellation into one of those errors."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tunnel_broker.backend.redis.health import raise_if_cancelled

pytestmark = pytest.mark.timeout(30)


async def _call_that_hides_its_cancellation() -> None:
    try:
        await asyncio.sleep(0.2)
    except asyncio.CancelledError:
        raise RedisConnectionError("connection closed") from None  # what redis-py may do


async def _loop(guarded: bool, rounds: list[int], most: int = 3) -> None:
    while len(rounds) < most:
        rounds.append(1)
        try:
            await _call_that_hides_its_cancellation()
        except RedisError:
            if guarded:
                raise_if_cancelled()
        await asyncio.sleep(0.01)


async def test_a_guarded_loop_ends_when_cancelled() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_loop(True, rounds))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert len(rounds) == 1


async def test_without_the_guard_the_loop_would_go_on() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_loop(False, rounds, most=2))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait_for(asyncio.shield(task), 15)  # the bug the guard is for: it goes on
    assert len(rounds) == 2 and not task.cancelled()


def test_outside_a_task_nothing_happens() -> None:
    raise_if_cancelled()

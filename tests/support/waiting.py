"""Waiting for conditions instead of sleeping (nats-server's checkFor)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# One knob to slow every wait down on a loaded machine: TB_TEST_TIME_SCALE=3.
TIME_SCALE = float(os.environ.get("TB_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE


async def check_for(
    seconds: float,
    condition: Callable[[], T | Awaitable[T | None] | None],
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + scaled(seconds)
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(interval)


async def until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Run the event loop (no sleeping) until ``condition`` holds; fail if it never does:
    for unit tests whose events all happen within a few loop iterations."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def settle(turns: int = 20) -> None:
    """Let every ready task run (to show that something does *not* happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)

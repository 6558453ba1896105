"""The quotas of a cluster: each app's message quota per period in Redis, reserved by the
pods in chunks (``backend/allowance.py``), and its open tunnels counted from the app's
index (``keys.app_index``, kept by the scripts that write and remove records).

What the warning header says comes from a view of the app's counts read at most once
per ``VIEW_SECONDS`` per pod (one pipelined round trip), plus what this pod used since:
API answers do not each pay a round trip for it.

While Redis cannot be reached a pod uses what it had reserved; past that, client
messages wait unread (their sockets are held, nothing is lost) and pushes are answered
503 ``backend_unavailable``, as other calls that need Redis are.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from tunnel_broker.apps import App, AppLimits
from tunnel_broker.backend.allowance import Allowances, Answer, Ask
from tunnel_broker.backend.quotas import Quotas, Verdict
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.scripts import RESERVE
from tunnel_broker.errors import BackendUnavailable
from tunnel_broker.usage.periods import Period

VIEW_SECONDS = 1.0
KEEP_SECONDS = 86400  # a period's hash outlives its end by this (the console may show it)


class RedisLedger:
    def __init__(self, client: aioredis.Redis, health: RedisHealth) -> None:
        self.health = health
        self._reserve = client.register_script(RESERVE)

    async def settle(self, app_id: str, period: Period, ask: Ask) -> Answer:
        result: list[Any] = await self.health.call(
            self._reserve(
                keys=[keys.message_quota(app_id, period.name)],
                args=[
                    ask.pod,
                    ask.total,
                    ask.held,
                    ask.need,
                    ask.want,
                    "1" if ask.release else "0",
                    ask.quota,
                    ask.hold_ms,
                    ask.share,
                    int(period.end) + KEEP_SECONDS,
                ],
            )
        )
        granted, used, others, free = (int(v) for v in result)
        return Answer(granted, used, others, free)


class RedisQuotas(Quotas):
    def __init__(
        self,
        client: aioredis.Redis,
        health: RedisHealth,
        node_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.redis = client
        self.health = health
        # A process of its own in the ledger: a pod restarted under the same node id
        # starts counting from zero, and its previous run's reservation lapses.
        pod = f"{node_id}/{os.urandom(4).hex()}"
        self.allowances = Allowances(RedisLedger(client, health), pod, self._clock)
        self._views: dict[str, tuple[float, str, int, int]] = {}  # app -> (at, period, used, open)
        self._fetching: dict[str, asyncio.Task[None]] = {}  # looks under way

    def _clock(self) -> float:
        return self.clock()  # ``clock`` may be replaced after construction (tests)

    def admit(self, app_id: str, limits: AppLimits, n: int) -> Verdict:
        quota = limits.message_quota
        if quota is None:
            return True
        return self.allowances.check(app_id, limits.message_quota_period, quota, n)

    def take(self, app_id: str, n: int) -> None:
        self.allowances.take(app_id, n)

    def used(self, app_id: str, limits: AppLimits) -> int:
        period = self.period(limits)
        view = self._views.get(app_id)
        seen = view[2] if view is not None and view[1] == period.name else 0
        return max(seen, self.allowances.used(app_id, period.name))

    async def tunnels_open(self, app_id: str) -> int:
        view = self._views.get(app_id)
        return 0 if view is None else view[3]

    async def warning(self, app: App) -> str | None:
        limits = app.limits
        if limits.message_quota is None and limits.max_tunnels is None:
            return None
        await self._look(app.id, limits)
        return await super().warning(app)

    async def _look(self, app_id: str, limits: AppLimits) -> None:
        """Refresh the app's view if it is older than ``VIEW_SECONDS`` (one look at a
        time per app; a failed look keeps the old view)."""
        view = self._views.get(app_id)
        if view is not None and time.monotonic() - view[0] < VIEW_SECONDS:
            return
        fetching = self._fetching.get(app_id)
        if fetching is None:
            fetching = asyncio.get_running_loop().create_task(self._fetch(app_id, limits))
            self._fetching[app_id] = fetching
        await asyncio.shield(fetching)

    async def _fetch(self, app_id: str, limits: AppLimits) -> None:
        try:
            period = self.period(limits)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(keys.message_quota(app_id, period.name), "used")
            pipe.zcard(keys.app_index(app_id))
            used, count = await self.health.call(pipe.execute())
            self._views[app_id] = (time.monotonic(), period.name, int(used or 0), int(count))
            self.allowances.learn(app_id, period, int(used or 0))
        except BackendUnavailable:
            pass  # a warning never fails an answer: the old view stands
        finally:
            self._fetching.pop(app_id, None)

    def _message_ratios(self) -> dict[tuple[str, str], float]:
        return {
            (app_id, "messages"): used / quota for app_id, used, quota in self.allowances.usage()
        }

    def start(self) -> None:
        self.allowances.start()

    async def stop(self) -> None:
        await self.allowances.stop()

"""Usage buckets in Redis: every pod adds its own counts to the same hourly hashes, so
what an app used is the sum over pods without anyone summing.

One hash per app per UTC hour, ``tb:{app}:usage:<YYYYMMDDHH>`` (``keys.usage``): a field
per count, ``tunnel_ms``, and ``peak_tunnels``. The meter's counts are added with
``HINCRBY``; the hash expires ``retention_days`` after its hour ends. ``peak_tunnels`` is
kept from the app's cross-pod index of open tunnels (a pod only knows its own): the
registry's attach and detach scripts raise it as the count changes, and each flush raises
the newest bucket's to the count at the time (an hour without a connect or close).

A flush is one pipeline (one round trip per Redis node): a script per app, which adds
the app's buckets unless the batch's token is already recorded as applied for this pod
(``keys.usage_applied``). That is what keeps counts exact when an answer is lost: the
meter sends the same batch again, and the script does not add it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.usage.buckets import (
    DAY,
    FIELDS,
    HOUR,
    Bucket,
    hour_label,
    hours_between,
    retained_since,
)
from tunnel_broker.usage.store import Batch

# KEYS[1] the pod's applied token, KEYS[2] the app's index of open tunnels, KEYS[3..] the
# app's bucket hashes, the newest last
# ARGV[1] token, ARGV[2] seconds the token is kept, then per bucket: the unix time it
# expires at, its number of fields, and field/increment pairs. Returns 1 if applied, 0 if
# the token was applied before. The newest bucket's peak is raised to the tunnels open now:
# an hour in which no tunnel opened or closed has no attach to write it.
ADD_USAGE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
local open = redis.call('ZCARD', KEYS[2])
local newest = KEYS[#KEYS]
if open > tonumber(redis.call('HGET', newest, 'peak_tunnels') or '0') then
  redis.call('HSET', newest, 'peak_tunnels', open)
end
local a = 3
for k = 3, #KEYS do
  local expires, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIREAT', KEYS[k], expires)
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisUsageStore:
    writes_peak = False  # the attach script keeps the peak of all pods (above)

    def __init__(
        self,
        redis: Any,
        health: RedisHealth | None,
        node_id: str,
        retention_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.health = health
        self.node_id = node_id
        self.retention_days = retention_days
        self.clock = clock

    async def _call(self, operation: Any) -> Any:
        """Through the pod's one error path when it has one (``health.py``): an
        unreachable Redis fails at once instead of after a timeout per flush."""
        if self.health is None:
            return await operation
        return await self.health.call(operation)

    def expires_at(self, hour: int) -> int:
        return hour + HOUR + self.retention_days * DAY

    async def add(self, batch: Batch) -> None:
        by_app: dict[str, list[tuple[int, Bucket]]] = {}
        for (app_id, hour), bucket in batch.buckets.items():
            by_app.setdefault(app_id, []).append((hour, bucket))
        pipe = self.redis.pipeline(transaction=False)
        for app_id, buckets in by_app.items():
            bucket_keys: list[str] = []
            args: list[Any] = [batch.token, self.retention_days * DAY]
            for hour, bucket in sorted(buckets, key=lambda item: item[0]):  # newest last
                fields = [(k, v) for k, v in bucket.items() if v and k != "peak_tunnels"]
                if not fields:
                    continue
                bucket_keys.append(keys.usage(app_id, hour_label(hour)))
                args += [self.expires_at(hour), len(fields)]
                for name, value in fields:
                    args += [name, value]
            if bucket_keys:
                applied = keys.usage_applied(app_id, self.node_id)
                index = keys.app_index(app_id)
                count = 2 + len(bucket_keys)
                pipe.eval(ADD_USAGE, count, applied, index, *bucket_keys, *args)
        if by_app:
            pipe.sadd(keys.USAGE_APPS, *by_app)
        await self._call(pipe.execute())

    async def buckets(self, app_id: str, first_hour: int, end: float) -> dict[int, Bucket]:
        oldest = retained_since(self.clock(), self.retention_days)
        hours = hours_between(max(first_hour, oldest), end)
        if not hours:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(keys.usage(app_id, hour_label(hour)))
        replies = await self._call(pipe.execute())
        found: dict[int, Bucket] = {}
        for hour, reply in zip(hours, replies, strict=True):
            bucket = {k: int(v) for k, v in reply.items() if k in FIELDS}
            if any(bucket.values()):
                found[hour] = bucket
        return found

    async def app_ids(self) -> set[str]:
        return set(await self._call(self.redis.smembers(keys.USAGE_APPS)))

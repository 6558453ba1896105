"""A node's usage metering, wired for its backend: the usage store, the recent
deliveries log, the recorder the webhook senders report to, and the meter.

Memory backend: all in this process. Redis backend: buckets and deliveries in Redis
(through the pod's own client and its one error path), so every pod shows the usage of
all. ``usage_metering = false`` leaves the meter off (nothing is flushed, usage shows
nothing new); the counters on the hot path and the deliveries log run either way: that
is what ``bench/broker_bench.py --metering off`` compares against.
"""

from __future__ import annotations

from typing import Any

from tunnel_broker.config import Settings
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.deliveries import DeliveryLog, DeliveryRecorder, MemoryDeliveryLog
from tunnel_broker.usage.meter import Meter
from tunnel_broker.usage.redis_deliveries import RedisDeliveryLog
from tunnel_broker.usage.redis_store import RedisUsageStore
from tunnel_broker.usage.store import MemoryUsageStore, UsageStore


class Metering:
    def __init__(
        self,
        counters: UsageCounters,
        store: UsageStore,
        deliveries: DeliveryLog,
        meter: Meter,
        enabled: bool = True,
        retention_days: int = 35,
    ) -> None:
        self.counters = counters
        self.store = store
        self.deliveries = deliveries
        self.meter = meter
        self.enabled = enabled  # whether the meter runs (the counters always do)
        self.retention_days = retention_days
        self.recorder = DeliveryRecorder(counters, deliveries)

    def start(self) -> None:
        if self.enabled:
            self.meter.start()

    async def stop(self) -> None:
        """The last flush (counts up to now), then the deliveries still queued."""
        if self.enabled:
            await self.meter.stop()
        if isinstance(self.deliveries, RedisDeliveryLog):
            await self.deliveries.stop()


def metering_for(counters: UsageCounters, backend: Any, settings: Settings) -> Metering:
    """Metering for a node on ``backend``: in Redis when the backend is the Redis one
    (its client ``redis`` and its ``health``), else in this process."""
    retention = settings.usage_retention_days
    redis = getattr(backend, "redis", None) if getattr(backend, "name", "") == "redis" else None
    store: UsageStore
    deliveries: DeliveryLog
    if redis is not None:
        health = getattr(backend, "health", None)
        store = RedisUsageStore(redis, health, settings.node_id, retention)
        deliveries = RedisDeliveryLog(redis, health)
    else:
        store = MemoryUsageStore(retention)
        deliveries = MemoryDeliveryLog()
    meter = Meter(counters, store, settings.usage_flush_seconds)
    enabled = settings.usage_metering
    return Metering(counters, store, deliveries, meter, enabled, retention_days=retention)

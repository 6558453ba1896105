"""Prometheus metrics, on a registry of the node's own (several nodes can live in one
test process). Gauges that mirror state (tunnels open, buffer depth) are read at scrape
time instead of being updated on every event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Pressure:
    """One app's back-pressure, as the node sees it at scrape time."""

    full: bool
    held_tunnels: int
    parked_events: int
    stored_bytes: int | None = None  # durable events: the app's, all pods, last seen


@dataclass(frozen=True, slots=True)
class SharedStateHealth:
    """Whether the node can use its shared state (Redis), and how often it could not."""

    topology: str
    healthy: bool
    outages: int
    failovers: int


class _SharedStateCollector(Collector):
    def __init__(self, health: Callable[[], SharedStateHealth | None]) -> None:
        self._health = health

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        health = self._health()
        if health is None:
            return
        up = GaugeMetricFamily(
            "tb_redis_healthy", "1 while this node can use Redis", labels=["topology"]
        )
        up.add_metric([health.topology], int(health.healthy))
        yield up
        yield CounterMetricFamily(
            "tb_redis_outages", "Times this node lost Redis (unready)", value=health.outages
        )
        yield CounterMetricFamily(
            "tb_redis_failovers",
            "Times the Redis master(s) this node writes to changed",
            value=health.failovers,
        )


class _QuotaCollector(Collector):
    def __init__(self, ratios: Callable[[], dict[tuple[str, str], float]]) -> None:
        self._ratios = ratios

    def collect(self) -> Iterable[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "tb_quota_used_ratio",
            "Share of the app's quota used (messages: this period; tunnels: open)",
            labels=["app", "quota"],
        )
        for (app_id, quota), ratio in sorted(self._ratios().items()):
            used.add_metric([app_id, quota], ratio)
        yield used


class _StateCollector(Collector):
    def __init__(
        self,
        tunnels_open: Callable[[], dict[str, int]],
        buffer_depth: Callable[[], dict[str, int]],
        ready: Callable[[], bool],
        messages_out: Callable[[], dict[str, int]],
        messages_in: Callable[[], dict[str, int]],
        pressure: Callable[[], dict[str, Pressure]],
    ) -> None:
        self._pressure = pressure
        self._messages_out = messages_out
        self._messages_in = messages_in
        self._tunnels_open = tunnels_open
        self._buffer_depth = buffer_depth
        self._ready = ready

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        out = CounterMetricFamily(
            "tb_messages_out", "Messages delivered to clients on this node", labels=["app"]
        )
        for app_id, count in sorted(self._messages_out().items()):
            out.add_metric([app_id], count)
        yield out
        into = CounterMetricFamily("tb_messages_in", "Messages from clients", labels=["app"])
        for app_id, count in sorted(self._messages_in().items()):
            into.add_metric([app_id], count)
        yield into
        tunnels = GaugeMetricFamily("tb_tunnels_open", "Open tunnels on this node", labels=["app"])
        for app_id, count in sorted(self._tunnels_open().items()):
            tunnels.add_metric([app_id], count)
        yield tunnels
        depth = GaugeMetricFamily(
            "tb_webhook_buffer_events", "Events waiting for webhook delivery", labels=["app"]
        )
        for app_id, count in sorted(self._buffer_depth().items()):
            depth.add_metric([app_id], count)
        yield depth
        yield GaugeMetricFamily("tb_ready", "1 when ready for traffic", value=int(self._ready()))
        try:  # scraped from the event loop (``/metrics``); a leak of tasks shows here
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            pass
        else:
            yield GaugeMetricFamily("tb_asyncio_tasks", "Tasks on the event loop", value=tasks)
        full = GaugeMetricFamily(
            "tb_backpressure",
            "1 while the app's buffer or event store is full (its sockets are not read)",
            labels=["app"],
        )
        held = GaugeMetricFamily(
            "tb_tunnels_held",
            "Sockets not read while waiting for the business server",
            labels=["app"],
        )
        parked = GaugeMetricFamily(
            "tb_webhook_events_parked",
            "Events held back until another pod delivers older events of their tunnels",
            labels=["app"],
        )
        stored = GaugeMetricFamily(
            "tb_events_stored_bytes",
            "Durable events: bytes of the app's undelivered events in Redis, all pods",
            labels=["app"],
        )
        for app_id, state in sorted(self._pressure().items()):
            full.add_metric([app_id], int(state.full))
            held.add_metric([app_id], state.held_tunnels)
            parked.add_metric([app_id], state.parked_events)
            if state.stored_bytes is not None:
                stored.add_metric([app_id], state.stored_bytes)
        yield full
        yield held
        yield parked
        yield stored


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connects = Counter(
            "tb_connects", "WebSocket connect attempts by result", ["app", "result"], registry=r
        )
        self.closes = Counter(
            "tb_tunnel_closes", "Tunnels closed, by close code", ["app", "code"], registry=r
        )
        self.webhook_requests = Counter(
            "tb_webhook_requests", "Webhook requests by outcome", ["app", "outcome"], registry=r
        )
        self.webhook_events = Counter(
            "tb_webhook_events", "Events acknowledged by webhook receivers", ["app"], registry=r
        )
        self.webhook_retries = Counter(
            "tb_webhook_retries", "Webhook batches retried", ["app"], registry=r
        )
        self.webhook_bad_replies = Counter(
            "tb_webhook_bad_replies",
            "2xx webhook replies whose body was unusable",
            ["app"],
            registry=r,
        )
        self.webhook_bad_actions = Counter(
            "tb_webhook_bad_actions",
            "Webhook reply actions that were invalid or could not be carried out",
            ["app"],
            registry=r,
        )
        self.webhook_latency = Histogram(
            "tb_webhook_latency_seconds",
            "Webhook request latency (successful attempts)",
            ["app"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.api_requests = Counter(
            "tb_api_requests", "HTTP API requests by status", ["status"], registry=r
        )
        self.quota_refusals = Counter(
            "tb_quota_refusals",
            "Connects, tunnels, pushes and messages refused for an app's quota "
            "(quota: tunnels or messages)",
            ["app", "quota"],
            registry=r,
        )

    def watch_state(
        self,
        tunnels_open: Callable[[], dict[str, int]],
        buffer_depth: Callable[[], dict[str, int]],
        ready: Callable[[], bool],
        messages_out: Callable[[], dict[str, int]],
        messages_in: Callable[[], dict[str, int]],
        pressure: Callable[[], dict[str, Pressure]],
    ) -> None:
        self.registry.register(
            _StateCollector(tunnels_open, buffer_depth, ready, messages_out, messages_in, pressure)
        )

    def watch_shared_state(self, health: Callable[[], SharedStateHealth | None]) -> None:
        self.registry.register(_SharedStateCollector(health))

    def watch_quotas(self, ratios: Callable[[], dict[tuple[str, str], float]]) -> None:
        """``tb_quota_used_ratio{app,quota}``: the share of each quota used, as the node
        last saw it (``Quotas.ratios``)."""
        self.registry.register(_QuotaCollector(ratios))

    def render(self) -> bytes:
        return generate_latest(self.registry)

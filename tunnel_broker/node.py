"""A broker node: the apps, the hub, the backend and event delivery, wired, with a lifecycle.

``start`` before serving; ``drain`` on SIGTERM (unready, refuse connects, let clients
leave, close the rest with 1012, flush webhooks); ``stop`` releases everything and is
idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from tunnel_broker.admin.operators import OperatorKeys
from tunnel_broker.admin.pods import PodReporter, pod_status
from tunnel_broker.admin.store import AppAdmin
from tunnel_broker.apps import App, AppRegistry
from tunnel_broker.backend.base import Backend
from tunnel_broker.backend.memory import MemoryBackend
from tunnel_broker.backoff import Backoff
from tunnel_broker.config import Settings
from tunnel_broker.errors import AppsFileError, BackendUnavailable
from tunnel_broker.metrics import Metrics, Pressure
from tunnel_broker.ratelimit import Budgets
from tunnel_broker.trace.tracer import Tracer
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.tunnels.tokens import TokenCodec
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.metering import metering_for
from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.actions import ActionRunner
from tunnel_broker.webhooks.batching import Pending, new_epoch
from tunnel_broker.webhooks.delivery import EventDelivery
from tunnel_broker.webhooks.handover import FileHandover
from tunnel_broker.webhooks.sender import WebhookSender
from tunnel_broker.wechat import WeChatClient

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend

logger = logging.getLogger("tunnel_broker.node")


class Node:
    def __init__(self, settings: Settings, apps: list[App], backend: Backend | None = None) -> None:
        self.settings = settings
        self.apps = AppRegistry(apps)
        # Messages and bytes per app, counted on the hot path in plain integers (a
        # Prometheus child's inc() takes a lock): metrics and usage metering read them.
        self.usage = UsageCounters()
        self.hub = Hub(self.usage)
        self.metrics = Metrics()
        self._file_apps = list(apps)
        self.backend = backend or self._make_backend()
        # Running it as a PaaS: operators' keys, and apps changed at run time.
        self.operators = OperatorKeys.parse(settings.admin_keys.reveal())
        redis = self._redis_backend()
        self.admin = AppAdmin(self.apps, (a.id for a in apps), redis)
        self.tracer = self._make_tracer(redis)
        self.started_at = time.time()
        self._pod_reporter = PodReporter(redis, self.status) if redis is not None else None
        self._reporting: asyncio.Task[None] | None = None
        self.tokens = TokenCodec(settings.secret_keys())
        self.sessions = self.backend.session_store()
        self._wechat_clients: dict[str, WeChatClient] = {}
        self.actions = ActionRunner(self.backend, self.hub, self.metrics)
        # Usage in hourly buckets, and each app's recent webhook deliveries (usage/).
        self.metering = metering_for(self.usage, self.backend, settings)
        sender = WebhookSender(
            self.apps,
            self.metrics,
            Backoff(cap=settings.webhook_retry_max_delay),
            recorder=self.metering.recorder,
        )
        self.events = EventDelivery(self.apps, sender, self.actions.run, self.usage)
        self.backend.use_delivery(self.events)
        self.started = False
        self.draining = False
        self._stopped = False
        # Request budgets (http/requests.py): API calls per app; logins, which anybody may
        # attempt, per app and per client address, apart from the API's.
        self.api_budgets = Budgets()
        self.login_budgets = Budgets()
        self.client_login_budgets = Budgets(max_keys=50_000)
        self._sweeper: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._parked: set[asyncio.Task[None]] = set()
        self.metrics.watch_state(
            self.hub.count_by_app,
            self.events.depths,
            self.ready,
            lambda: self.usage.totals("messages_out"),
            lambda: self.usage.totals("messages_in"),
            self._pressure,
        )
        self.metrics.watch_shared_state(self.backend.shared_state_health)
        self.metrics.watch_quotas(self.backend.quotas.ratios)

    def _make_backend(self) -> Backend:
        settings = self.settings
        if settings.backend == "memory":
            handover = settings.handover_path()
            return MemoryBackend(
                self.hub, settings.node_id, FileHandover(handover) if handover else None
            )
        from tunnel_broker.backend.redis.backend import RedisBackend
        from tunnel_broker.backend.redis.topology import RedisTopology

        backend = RedisBackend(
            RedisTopology.from_settings(settings),
            self.hub,
            settings.node_id,
            self._report_lost,
            settings.lease_seconds,
            settings.durable_events,
            self._max_stored_bytes,
            usage_retention_seconds=settings.usage_retention_days * 86400,
        )
        backend.on_apps_changed = self.reload_apps
        backend.on_repaired = self.sync_apps
        backend.rejoin.on_rejoined = self._report_rejoined
        return backend

    def _make_tracer(self, redis: RedisBackend | None) -> Tracer:
        """The live trace: this process's watchers, or every pod's through Redis."""
        if redis is None:
            return Tracer(self.usage, self.apps)
        from tunnel_broker.trace.redis_relay import RedisTracer

        return RedisTracer(self.usage, self.apps, redis)

    def _redis_backend(self) -> RedisBackend | None:
        if self.backend.name != "redis":
            return None
        from tunnel_broker.backend.redis.backend import RedisBackend

        return self.backend if isinstance(self.backend, RedisBackend) else None

    def _max_stored_bytes(self, app_id: str) -> int:
        app = self.apps.get(app_id)
        return app.limits.event_store_max_bytes if app is not None else 0

    def _pressure(self) -> dict[str, Pressure]:
        held = Counter(t.app.id for t in self.hub if t.held)
        stored = self.backend.stored_bytes()
        return {
            app_id: Pressure(queue.full, held.get(app_id, 0), queue.parked, stored.get(app_id))
            for app_id, queue in self.events.queues().items()
        }

    def wechat_client(self, base_url: str) -> WeChatClient:
        """One client per WeChat API base URL (the real one, or a simulator)."""
        client = self._wechat_clients.get(base_url)
        if client is None:
            client = self._wechat_clients[base_url] = WeChatClient(base_url)
        return client

    async def reload_apps(self) -> None:
        await self.sync_apps(upsert=False)

    async def sync_apps(self, upsert: bool = True) -> None:
        """Publish the apps file (``upsert``) to the shared apps, if the backend shares
        them, and take the shared apps."""
        try:
            apps = await self.backend.shared_apps(self._file_apps if upsert else [])
        except BackendUnavailable as exc:
            logger.error("%s; keeping the current apps", exc)
            return
        except AppsFileError as exc:
            logger.error("shared apps are invalid: %s", exc)
            return
        if apps is not None:
            self.apps.replace_all(apps)

    def _report_lost(
        self,
        app_id: str,
        tunnel_id: str,
        user_id: str,
        identity: dict[str, Any],
        meta: dict[str, Any],
        reason: str = "node_lost",
    ) -> int | None:
        """Report a dead pod's tunnel closed; the report's epoch (batching.py)."""
        app = self.apps.get(app_id)
        if app is None:
            logger.error("lost tunnel %s of unknown app %s not reported", tunnel_id, app_id)
            return None
        fragment = events.tunnel_fragment(app_id, tunnel_id, user_id, identity, meta)
        epoch = new_epoch()
        self.events.emit(app, events.closed(fragment, tunnel_id, 1006, reason), epoch=epoch)
        self.metrics.closes.labels(app_id, "1006").inc()
        return epoch

    def _report_rejoined(self, tunnel: Tunnel, unstored: list[Pending]) -> None:
        """A socket of this pod registered again after the pod was reaped (its tunnel
        was reported closed elsewhere): a new ``tunnel.connected``, then what it read and
        never stored (``backend/redis/rejoin.py``)."""
        app = tunnel.app
        queue = self.events.queue(app)
        queue.emit(events.connected(tunnel.fragment, tunnel.tunnel_id), None, tunnel.epoch)
        for pending in unstored:
            queue.emit(pending.event, None, tunnel.epoch)
        self.metrics.connects.labels(app.id, "rejoined").inc()

    def ready(self) -> bool:
        return self.started and not self.draining and self.backend.ready()

    async def start(self) -> None:
        await self.backend.start()
        await self.sync_apps()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweeper")
        self.metering.start()
        await self.tracer.start()
        if self._pod_reporter is not None:
            self._reporting = asyncio.get_running_loop().create_task(
                self._pod_reporter.run(), name="pod-status"
            )
        self.started_at = time.time()
        self.started = True
        logger.info(
            "node %s ready: backend=%s apps=%s",
            self.settings.node_id,
            self.backend.name,
            ",".join(a.id for a in self.apps.all()) or "(none)",
        )

    def status(self) -> dict[str, Any]:
        """This pod as the operator sees it (``GET /admin/v1/pods``)."""
        return pod_status(self.settings.node_id, self.ready(), len(self.hub), self.started_at)

    async def _sweep(self) -> None:
        """Close idle and too-old tunnels; one task for all tunnels instead of a timer
        each, which keeps an idle tunnel cheap."""
        settings = self.settings
        while True:
            await asyncio.sleep(settings.sweep_interval)
            now = time.monotonic()
            wall = time.time()
            for tunnel in self.hub:
                if tunnel.closing or tunnel.held or tunnel.parked:  # parked: its window
                    continue
                if settings.idle_timeout and now - tunnel.last_activity > settings.idle_timeout:
                    tunnel.close(CloseCode.GOING_AWAY, "idle_timeout")
                elif (
                    settings.max_connection_seconds
                    and wall - tunnel.connected_at > settings.max_connection_seconds
                ):
                    tunnel.close(CloseCode.GOING_AWAY, "max_lifetime")

    def keep_parked(self, ending: Coroutine[Any, Any, None]) -> None:
        """Run the rest of a parked tunnel's life (``ConnectHandler._park``) apart from
        its socket's task: the server waits for those at a shutdown, and a tunnel
        waiting for its client has no socket to wait for."""
        task = asyncio.get_running_loop().create_task(ending)
        self._parked.add(task)
        task.add_done_callback(self._parked.discard)

    async def _end_parked(self) -> None:
        """Close the tunnels waiting for a resume (they have no socket to move to
        another pod) and wait until they are reported closed."""
        for tunnel in self.hub:
            if tunnel.parked:
                tunnel.close(CloseCode.SERVICE_RESTART, "broker_restarting")
        if self._parked:
            await asyncio.wait(set(self._parked), timeout=5.0)

    def begin_drain(self) -> asyncio.Task[None]:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(), name="drain")
        return self._drain_task

    async def drain(self) -> None:
        """Leave the cluster gracefully; see the module docstring for the steps."""
        self.draining = True
        self.backend.begin_drain()
        settings = self.settings
        await self._end_parked()
        logger.info(
            "draining: %d tunnels open, waiting up to %.1fs", len(self.hub), settings.drain_seconds
        )
        await self._wait_until(lambda: len(self.hub) == 0, settings.drain_seconds)
        for tunnel in self.hub:
            tunnel.close(CloseCode.SERVICE_RESTART, "broker_restarting")
        # The reading tasks emit tunnel.closed as their sockets finish closing.
        await self._wait_until(lambda: len(self.hub) == 0, 5.0)
        left = await self.events.flush(settings.shutdown_flush_seconds)
        if left:
            logger.warning("drain: %d webhook events still undelivered", left)
        else:
            logger.info("drain complete: all webhook events delivered")

    async def _hand_over(self) -> None:
        """Keep what could not be delivered for whoever delivers next (``tunnel.closed``
        events above all: without them the business server would see tunnels that never
        closed)."""
        undelivered = await self.events.take_undelivered()
        count = sum(len(kept) for kept in undelivered.values())
        if not count:
            return
        kept = await self.backend.hand_over(undelivered)
        if kept:
            logger.warning("%d undelivered webhook events kept for later delivery", kept)
        else:
            logger.error("%d webhook events could not be delivered before shutdown", count)

    @staticmethod
    async def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
        # Polled: the condition spans many tasks' state, and this runs once per process.
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._drain_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        for task in (self._sweeper, self._reporting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._reporting is not None and self._pod_reporter is not None:
            await self._pod_reporter.goodbye()
        await self._end_parked()
        await self._hand_over()
        await self.events.close()
        await self.metering.stop()  # after the last webhook: its counts are flushed too
        await self.tracer.stop()
        for client in self._wechat_clients.values():
            await client.aclose()
        await self.backend.stop()

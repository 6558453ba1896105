"""The webhook relay: delivers each app's events to its webhook URL, in order, batched,
retried, and never silently dropped.

Per app there is one ``EventBuffer`` (see ``batching.py``) and one worker task per lane.
A worker sends as soon as its lane has events, retries the *same* batch (same
``webhook-id``, fresh timestamp and signature) until the receiver answers 2xx, and only
then hands the reply's actions to the node and moves on. When an app's buffer is full,
``wait_for_room`` blocks the readers of that app's sockets: back-pressure, not loss.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tunnel_broker.apps import App, AppRegistry
from tunnel_broker.backoff import Backoff, parse_retry_after
from tunnel_broker.batching import EventBuffer, OnDelivered, Pending
from tunnel_broker.events import EncodedEvent, batch_body, new_id
from tunnel_broker.metrics import Metrics
from tunnel_broker.signing import WebhookSigner
from tunnel_broker.webhook_client import BodyTooLarge, WebhookClient, WebhookHttpError

logger = logging.getLogger("tunnel_broker.relay")

ActionHandler = Callable[[App, list[EncodedEvent], list[dict[str, Any]]], Awaitable[None]]
USER_AGENT = "tunnel-broker-webhooks/1"
MAX_REPLY_BYTES = 4 * 1024 * 1024


class _Failure(Exception):
    def __init__(self, outcome: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.retry_after = retry_after


class AppRelay:
    """One app's buffer and the task that decides when its batches leave."""

    def __init__(self, relay: WebhookRelay, app: App) -> None:
        self.relay = relay
        self.app_id = app.id
        limits = app.limits
        self.buffer = EventBuffer(
            concurrency=limits.webhook_concurrency,
            max_events=limits.webhook_buffer_events,
            max_bytes=limits.webhook_buffer_bytes,
            batch_events=limits.webhook_batch_max_events,
            batch_bytes=limits.webhook_batch_max_bytes,
            linger=limits.webhook_linger_ms / 1000,
        )
        self.loop = asyncio.get_running_loop()
        self.room = asyncio.Event()
        self.room.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.wakeup = asyncio.Event()
        # Whether a push can change the dispatcher's mind; most pushes cannot (a linger
        # timer or a request in flight will wake it anyway), and waking it costs more
        # than the push itself.
        self.wake_on_push = True
        self.deliveries: set[asyncio.Task[None]] = set()
        self.dispatcher = self.loop.create_task(self._dispatch(), name=f"relay:{app.id}")

    def emit(self, event: EncodedEvent, on_delivered: OnDelivered | None = None) -> None:
        self.buffer.push(Pending(event, on_delivered, self.loop.time()))
        self.idle.clear()
        if self.wake_on_push or len(self.buffer.queue) >= self.buffer.batch_events:
            self.wakeup.set()
        if not self.buffer.has_room:
            self.room.clear()

    async def _dispatch(self) -> None:
        buffer = self.buffer
        wakeup = self.wakeup
        timer: asyncio.TimerHandle | None = None
        while True:
            wakeup.clear()
            delay = buffer.wait_before_next(self.loop.time())
            if delay == 0.0:
                batch_id, batch = buffer.take_batch()
                task = self.loop.create_task(self._deliver(batch_id, batch))
                self.deliveries.add(task)
                task.add_done_callback(self.deliveries.discard)
                continue
            if delay is not None:
                timer = self.loop.call_later(delay, wakeup.set)
            self.wake_on_push = delay is None and len(buffer.in_flight) < buffer.concurrency
            await wakeup.wait()
            if timer is not None:
                timer.cancel()
                timer = None

    async def _deliver(self, batch_id: int, batch: list[Pending]) -> None:
        events = [p.event for p in batch]
        actions = await self.relay.deliver(self.app_id, events)
        app = self.relay.apps.get(self.app_id)
        if actions and app is not None:
            try:
                await self.relay.on_actions(app, events, actions)
            except Exception:
                logger.exception("app %s: carrying out webhook actions failed", self.app_id)
        self.buffer.complete(batch_id)
        for pending in batch:
            if pending.on_delivered is not None:
                pending.on_delivered()
        if self.buffer.has_room:
            self.room.set()
        if self.buffer.is_empty():
            self.idle.set()
        self.wakeup.set()

    async def close(self) -> None:
        tasks = [self.dispatcher, *self.deliveries]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class WebhookRelay:
    def __init__(
        self,
        apps: AppRegistry,
        metrics: Metrics,
        on_actions: ActionHandler,
        backoff: Backoff | None = None,
        # A receiver may ask for longer pauses than our own backoff would take, but not
        # for more than ten minutes: past that it is more likely a bug than a plan.
        retry_after_limit: float = 600.0,
    ) -> None:
        self.apps = apps
        self.metrics = metrics
        self.on_actions = on_actions
        self.backoff = backoff or Backoff()
        self.retry_after_limit = retry_after_limit
        self.http = WebhookClient(USER_AGENT)
        self._metric_children: dict[str, tuple[Any, Any, Any]] = {}
        self._relays: dict[str, AppRelay] = {}
        self._signers: dict[str, tuple[tuple[str, ...], WebhookSigner]] = {}

    def for_app(self, app: App) -> AppRelay:
        relay = self._relays.get(app.id)
        if relay is None:
            relay = self._relays[app.id] = AppRelay(self, app)
        return relay

    def emit(self, app: App, event: EncodedEvent, on_delivered: OnDelivered | None = None) -> None:
        self.for_app(app).emit(event, on_delivered)

    def has_room(self, app: App) -> bool:
        relay = self._relays.get(app.id)
        return relay is None or relay.buffer.has_room

    async def wait_for_room(self, app: App) -> None:
        await self.for_app(app).room.wait()

    def buffer_depths(self) -> dict[str, int]:
        return {app_id: r.buffer.events for app_id, r in self._relays.items()}

    def _ok_metrics(self, app_id: str) -> tuple[Any, Any, Any]:
        """The labelled metrics of a successful request, looked up once per app:
        ``labels()`` costs more than the increment itself."""
        children = self._metric_children.get(app_id)
        if children is None:
            metrics = self.metrics
            children = self._metric_children[app_id] = (
                metrics.webhook_latency.labels(app_id),
                metrics.webhook_requests.labels(app_id, "ok"),
                metrics.webhook_events.labels(app_id),
            )
        return children

    def _signer(self, app: App) -> WebhookSigner:
        secrets = tuple(app.webhook_secrets)
        cached = self._signers.get(app.id)
        if cached is None or cached[0] != secrets:
            cached = (secrets, WebhookSigner(list(secrets)))
            self._signers[app.id] = cached
        return cached[1]

    async def deliver(self, app_id: str, events: list[EncodedEvent]) -> list[dict[str, Any]]:
        """POST one batch until it is acknowledged; return the reply's actions."""
        body = batch_body(events)
        msg_id = new_id("msg_")
        attempt = 0
        while True:
            app = self.apps.get(app_id)
            if app is None:
                # The app was deleted: there is nobody to deliver to any more.
                logger.error(
                    "app %s was removed; %d undelivered events discarded", app_id, len(events)
                )
                return []
            started = time.perf_counter()
            try:
                try:
                    actions = await self._post(app, msg_id, body)
                except _Failure:
                    raise
                except Exception as exc:
                    # A bug must not strand the batch (and with it every later event of
                    # its tunnels): report it loudly and retry like any failure.
                    logger.exception("app %s: webhook attempt failed unexpectedly", app_id)
                    raise _Failure("internal_error", type(exc).__name__) from exc
            except _Failure as failure:
                attempt += 1
                self.metrics.webhook_requests.labels(app_id, failure.outcome).inc()
                self.metrics.webhook_retries.labels(app_id).inc()
                delay = failure.retry_after
                if delay is None:
                    delay = self.backoff.delay(attempt)
                logger.warning(
                    "app %s: webhook attempt %d for %d events failed (%s); retrying in %.2fs",
                    app_id,
                    attempt,
                    len(events),
                    failure,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            latency, ok, delivered = self._ok_metrics(app_id)
            latency.observe(time.perf_counter() - started)
            ok.inc()
            delivered.inc(len(events))
            return actions

    async def _post(self, app: App, msg_id: str, body: bytes) -> list[dict[str, Any]]:
        headers = self._signer(app).headers(msg_id, int(time.time()), body)
        headers["content-type"] = "application/json"
        try:
            response = await self.http.post(
                app.webhook_url,
                body,
                headers,
                seconds=app.limits.webhook_timeout_seconds,
                max_body=MAX_REPLY_BYTES,
            )
        except TimeoutError:
            raise _Failure("timeout", "no answer within the timeout") from None
        except BodyTooLarge as exc:
            if 200 <= exc.status < 300:
                self._bad_reply(app.id, str(exc))
                return []
            raise _Failure("http_error", f"HTTP {exc.status} with {exc}") from None
        except WebhookHttpError as exc:
            raise _Failure("network_error", str(exc)) from None
        if not 200 <= response.status < 300:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), time.time(), self.retry_after_limit
            )
            raise _Failure("http_error", f"HTTP {response.status}", retry_after)
        return self._actions_of(app.id, response.body)

    def _actions_of(self, app_id: str, content: bytes) -> list[dict[str, Any]]:
        if not content.strip():
            return []
        try:
            reply = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            self._bad_reply(app_id, "reply body is not JSON")
            return []
        if not isinstance(reply, dict):
            self._bad_reply(app_id, "reply body is not a JSON object")
            return []
        actions = reply.get("actions", [])
        if not isinstance(actions, list):
            self._bad_reply(app_id, "'actions' is not a list")
            return []
        return actions

    def _bad_reply(self, app_id: str, why: str) -> None:
        # A 2xx acknowledges the events whatever the body says; a body we cannot read
        # means the actions in it are lost, which the operator must hear about.
        self.metrics.webhook_bad_replies.labels(app_id).inc()
        logger.error("app %s: webhook acknowledged, but its actions were ignored: %s", app_id, why)

    async def flush(self, seconds: float) -> int:
        """Wait until every buffered event is delivered or ``seconds`` pass; return how
        many events are still undelivered."""
        relays = list(self._relays.values())
        waits = [asyncio.ensure_future(r.idle.wait()) for r in relays]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=seconds)
            for w in pending:
                w.cancel()
        return sum(r.buffer.events for r in relays)

    async def close(self) -> None:
        for relay in self._relays.values():
            left = relay.buffer.events
            if left:
                logger.error(
                    "app %s: %d webhook events could not be delivered before shutdown",
                    relay.app_id,
                    left,
                )
            await relay.close()
        self._relays.clear()
        await self.http.close()

"""Sending one batch of events to an app's webhook URL until it is acknowledged.

A batch keeps its ``webhook-id`` across attempts (receivers deduplicate on it) and gets a
fresh timestamp and signature each time. Every failure is retried, with the broker's
backoff or the receiver's ``Retry-After``, for as long as the app exists: an event is
never silently dropped. The answer's actions are returned to the caller, which carries
them out only once the whole batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from tunnel_broker.apps import App, AppRegistry
from tunnel_broker.backoff import Backoff, parse_retry_after
from tunnel_broker.errors import BodyTooLarge, WebhookHttpError
from tunnel_broker.logs import LogThrottle
from tunnel_broker.metrics import Metrics
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.usage.deliveries import DeliveryRecorder, MemoryDeliveryLog
from tunnel_broker.wafer.events import is_wafer_tunnel
from tunnel_broker.wafer.sender import WaferEventSender
from tunnel_broker.webhooks.events import EncodedEvent, batch_body, new_id
from tunnel_broker.webhooks.http_client import WebhookClient
from tunnel_broker.webhooks.signing import WebhookSigner

logger = logging.getLogger("tunnel_broker.webhooks.sender")
_bad_replies = LogThrottle(logger)

USER_AGENT = "tunnel-broker-webhooks/1"
MAX_REPLY_BYTES = 4 * 1024 * 1024


class _Failure(Exception):
    def __init__(
        self,
        outcome: str,
        detail: str,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.retry_after = retry_after
        self.status = status  # the HTTP status, if an answer came


class WebhookSender:
    def __init__(
        self,
        apps: AppRegistry,
        metrics: Metrics,
        backoff: Backoff | None = None,
        # A receiver may ask for longer pauses than our own backoff would take, but not
        # for more than ten minutes: past that it is more likely a bug than a plan.
        retry_after_limit: float = 600.0,
        recorder: DeliveryRecorder | None = None,
    ) -> None:
        self.apps = apps
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.retry_after_limit = retry_after_limit
        # Every attempt's outcome: the app's usage counts and recent deliveries.
        self.recorder = recorder or DeliveryRecorder(UsageCounters(), MemoryDeliveryLog())
        self.http = WebhookClient(USER_AGENT)
        self._metric_children: dict[str, tuple[Any, Any, Any]] = {}
        self._signers: dict[str, tuple[tuple[str, ...], WebhookSigner]] = {}
        self.wafer = WaferEventSender(apps.get, self.http, metrics, self.backoff, self.recorder)

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
        secrets = tuple(app.signing_secrets(time.time()))
        cached = self._signers.get(app.id)
        if cached is None or cached[0] != secrets:
            cached = (secrets, WebhookSigner(list(secrets)))
            self._signers[app.id] = cached
        return cached[1]

    async def send(self, app_id: str, events: list[EncodedEvent]) -> list[dict[str, Any]]:
        """POST one batch until it is acknowledged; return the reply's actions. The events
        of an app's Wafer tunnels go their own way (``wafer/sender.py``)."""
        app = self.apps.get(app_id)
        if app is None or app.wafer is None:
            return await self._send_native(app_id, events)
        legacy = [event for event in events if is_wafer_tunnel(event.tunnel_id)]
        if not legacy:
            return await self._send_native(app_id, events)
        native = [event for event in events if not is_wafer_tunnel(event.tunnel_id)]
        if not native:
            await self.wafer.send(app_id, legacy)
            return []
        legacy_sent = asyncio.ensure_future(self.wafer.send(app_id, legacy))
        try:
            actions = await self._send_native(app_id, native)
        except BaseException:
            legacy_sent.cancel()  # stopping: both parts stay undelivered, as a whole
            raise
        await legacy_sent
        return actions

    async def _send_native(self, app_id: str, events: list[EncodedEvent]) -> list[dict[str, Any]]:
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
                    status, actions = await self._post(app, msg_id, body)
                except _Failure:
                    raise
                except Exception as exc:
                    # A bug must not strand the batch (and with it every later event of
                    # its tunnels): report it loudly and retry like any failure.
                    logger.exception("app %s: webhook attempt failed unexpectedly", app_id)
                    raise _Failure("internal_error", type(exc).__name__) from exc
            except _Failure as failure:
                attempt += 1
                self.recorder.attempt(
                    app_id,
                    started=started,
                    attempt=attempt,
                    events=len(events),
                    outcome=failure.outcome,
                    status=failure.status,
                    error=str(failure),
                )
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
            self.recorder.attempt(
                app_id, started=started, attempt=attempt + 1, events=len(events), status=status
            )
            latency, ok, delivered = self._ok_metrics(app_id)
            latency.observe(time.perf_counter() - started)
            ok.inc()
            delivered.inc(len(events))
            return actions

    async def _post(self, app: App, msg_id: str, body: bytes) -> tuple[int, list[dict[str, Any]]]:
        """POST one attempt; (the HTTP status, the reply's actions), or ``_Failure``."""
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
                return exc.status, []
            raise _Failure(
                "http_error", f"HTTP {exc.status} with {exc}", None, exc.status
            ) from None
        except WebhookHttpError as exc:
            raise _Failure("network_error", str(exc)) from None
        if not 200 <= response.status < 300:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), time.time(), self.retry_after_limit
            )
            raise _Failure("http_error", f"HTTP {response.status}", retry_after, response.status)
        return response.status, self._actions_of(app.id, response.body)

    def _actions_of(self, app_id: str, content: bytes) -> list[dict[str, Any]]:
        if not content.strip():
            return []
        try:
            reply = json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._bad_reply(app_id, "reply body is not JSON (or is nested too deeply)")
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
        _bad_replies.error(
            app_id, "app %s: webhook acknowledged, but its actions were ignored: %s", app_id, why
        )

    async def close(self) -> None:
        await self.http.close()

"""Delivering Wafer tunnels' events: one request per event, in order per tunnel.

The legacy business servers take events one at a time (``events.py``) and answer HTTP
200 whether or not they handled them: qcloud's SDK writes ``{"code": 0}`` before its
handler runs, the wafer2 quickstart ``{"code": -1}`` when its handler threw. So an event
counts as delivered on a 2xx whose body is a JSON object with ``code`` 0 (or an empty
body); anything else is retried like a native webhook, with backoff, until the app is
gone, and never skipped: the tunnel's later events wait behind it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from tunnel_broker.apps import App
from tunnel_broker.backoff import Backoff
from tunnel_broker.errors import BodyTooLarge, WebhookHttpError
from tunnel_broker.metrics import Metrics
from tunnel_broker.usage.deliveries import DeliveryRecorder
from tunnel_broker.wafer.events import legacy_event
from tunnel_broker.webhooks.events import EncodedEvent
from tunnel_broker.webhooks.http_client import WebhookClient

logger = logging.getLogger("tunnel_broker.wafer")

MAX_REPLY_BYTES = 64 * 1024
# What a failed attempt's record says (``usage/deliveries.py``): never the URL or body.
_ERRORS = {
    "invalid_url": "receiveUrl is not on one of the app's business hosts",
    "timeout": "no answer within the timeout",
    "bad_reply": "the reply is too large or not JSON",
    "network_error": "no complete HTTP answer",
    "http_error": "not a 2xx answer",
    "refused": "the reply's code is not 0",
}
TUNNELS_AT_ONCE = 16  # per batch: a batch of many tunnels' events is not sent one by one


class WaferEventSender:
    def __init__(
        self,
        app_of: Callable[[str], App | None],
        http: WebhookClient,
        metrics: Metrics,
        backoff: Backoff,
        recorder: DeliveryRecorder,
    ) -> None:
        self.app_of = app_of
        self.http = http
        self.metrics = metrics
        self.backoff = backoff
        self.recorder = recorder  # each attempt: the app's usage and recent deliveries

    async def send(self, app_id: str, events: list[EncodedEvent]) -> None:
        """Deliver every event; each tunnel's in order, tunnels side by side."""
        by_tunnel: dict[str, list[EncodedEvent]] = {}
        for event in events:
            by_tunnel.setdefault(event.tunnel_id, []).append(event)
        room = asyncio.Semaphore(TUNNELS_AT_ONCE)

        async def one_tunnel(tunnel_events: list[EncodedEvent]) -> None:
            async with room:
                for event in tunnel_events:
                    await self._deliver(app_id, event)

        await asyncio.gather(*(one_tunnel(evs) for evs in by_tunnel.values()))

    async def _deliver(self, app_id: str, event: EncodedEvent) -> None:
        attempt = 0
        while True:
            app = self.app_of(app_id)
            if app is None or app.wafer is None:
                logger.error(
                    "app %s is gone or left Wafer mode: event %s dropped", app_id, event.id
                )
                return
            request = legacy_event(event, app.wafer.signing_keys[0])
            url = app.wafer.receive_url(request.receive_url)
            started = time.perf_counter()
            if url is None:
                outcome, status = "invalid_url", None
            else:
                outcome, status = await self._post(app, url, request.body)
            self.recorder.attempt(
                app_id,
                started=started,
                attempt=attempt + 1,
                events=1,
                outcome=outcome,
                status=status,
                error=None if outcome == "ok" else _ERRORS.get(outcome, outcome),
            )
            if outcome == "ok":
                self.metrics.webhook_latency.labels(app_id).observe(time.perf_counter() - started)
                self.metrics.webhook_requests.labels(app_id, "ok").inc()
                self.metrics.webhook_events.labels(app_id).inc()
                return
            attempt += 1
            self.metrics.webhook_requests.labels(app_id, outcome).inc()
            self.metrics.webhook_retries.labels(app_id).inc()
            delay = self.backoff.delay(attempt)
            logger.warning(
                "app %s: Wafer event of tunnel %s, attempt %d failed (%s); retrying in %.2fs",
                app_id,
                event.tunnel_id,
                attempt,
                outcome,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, app: App, url: str, body: bytes) -> tuple[str, int | None]:
        """One attempt: (its outcome, the HTTP status if an answer came)."""
        try:
            response = await self.http.post(
                url,
                body,
                {"content-type": "application/json"},
                seconds=app.limits.webhook_timeout_seconds,
                max_body=MAX_REPLY_BYTES,
            )
        except TimeoutError:
            return "timeout", None
        except BodyTooLarge as exc:
            return "bad_reply", exc.status
        except WebhookHttpError:
            return "network_error", None
        status = response.status
        if not 200 <= status < 300:
            return "http_error", status
        if not response.body.strip():
            return "ok", status
        try:
            reply = json.loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return "bad_reply", status
        if isinstance(reply, dict) and reply.get("code") == 0:
            return "ok", status
        return "refused", status

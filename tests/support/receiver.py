"""A real webhook receiver for tests.

It verifies every request with the ``standardwebhooks`` library (not the broker's own
code), records the events in arrival order, and answers according to a scriptable
``behaviour``: normal replies computed by ``on_events``, HTTP errors, garbage, slowness.

Behaviours: ``ok``; ``status:<n>`` (answers n, records nothing); ``slow:<seconds>``
(records and answers after that long); ``garbage`` (records, answers 200 with a body that
is not JSON); ``wrong-shape`` (records, answers 200 with JSON that is not an actions
object). Each delivery keeps the time it was recorded, so fault tests can tell how long
the business server waited for events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import free_port, run_uvicorn

Reply = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class Delivery:
    webhook_id: str
    events: list[dict[str, Any]]
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class WebhookReceiver:
    secret: str
    on_events: Reply | None = None
    behaviour: str = "ok"  # ok | status:<n> | garbage | wrong-shape | slow:<seconds>
    retry_after: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    rejected_signatures: int = 0
    port: int = field(default_factory=free_port)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for d in self.deliveries for e in d.events]

    def events_of(self, tunnel_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["tunnel_id"] == tunnel_id and (kind is None or e["type"] == kind)
        ]

    async def _handle(self, request: Request) -> Response:
        self.attempts += 1
        body = await request.body()
        headers = {k: v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.rejected_signatures += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        behaviour = self.behaviour
        if behaviour.startswith("status:"):
            extra = {"retry-after": self.retry_after} if self.retry_after else None
            return Response("nope", status_code=int(behaviour.split(":")[1]), headers=extra)
        if behaviour.startswith("slow:"):
            await asyncio.sleep(float(behaviour.split(":")[1]))
        events = json.loads(body)["events"]
        self.deliveries.append(Delivery(headers["webhook-id"], events, headers, body))
        if behaviour == "garbage":
            return Response(b"\x00not json{{", media_type="application/json")
        if behaviour == "wrong-shape":
            return JSONResponse({"actions": {"type": "send"}, "extra": [1, 2]})
        actions = self.on_events(events) if self.on_events else []
        return JSONResponse({"actions": actions})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/webhook", self._handle, methods=["POST"])])

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[WebhookReceiver]:
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(run_uvicorn(self.app(), self.port))
        try:
            yield self
        finally:
            await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Inside the block the receiver is down (connections refused); it comes back
        on the same port after, keeping what it received."""
        await self._stack.aclose()
        try:
            yield
        finally:
            self._stack = contextlib.AsyncExitStack()
            await self._stack.enter_async_context(run_uvicorn(self.app(), self.port))


def echo_messages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer each text message with ``echo:<text>`` to its own tunnel."""
    return [
        {"type": "send", "to": {"tunnels": [e["tunnel_id"]]}, "data": "echo:" + e["data"]}
        for e in events
        if e["type"] == "tunnel.message" and "data" in e
    ]

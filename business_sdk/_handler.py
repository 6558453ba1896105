"""``WebhookHandler``: verify a webhook, hand each event to the code registered for its type,
and build the answer the broker acts on.

Framework-free: ``handle`` / ``handle_sync`` take headers and raw body and return a
``WebhookResponse`` (status, body, media type), which each integration turns into its own
response type. A handler that raises makes the request fail, so the broker redelivers the whole
batch later: events are never acknowledged unless every handler finished.

Handlers may be plain functions or coroutines; the async path awaits them, the sync path
(Flask, Django) runs any coroutine on a private event loop for the duration of the request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from business_sdk._actions import Actions
from business_sdk._events import (
    TunnelClosed,
    TunnelConnected,
    TunnelEvent,
    TunnelMessage,
    parse_events,
)
from business_sdk._exceptions import WebhookError
from business_sdk._signature import DEFAULT_TOLERANCE, Headers, WebhookVerifier

HandlerResult = Awaitable[None] | None
ConnectedHandler = Callable[[TunnelConnected, Actions], HandlerResult]
MessageHandler = Callable[[TunnelMessage, Actions], HandlerResult]
ClosedHandler = Callable[[TunnelClosed, Actions], HandlerResult]
EventHandler = Callable[[TunnelEvent, Actions], HandlerResult]

_C = TypeVar("_C", bound=ConnectedHandler)
_M = TypeVar("_M", bound=MessageHandler)
_X = TypeVar("_X", bound=ClosedHandler)
_A = TypeVar("_A", bound=EventHandler)

_AnyHandler = Callable[[Any, Actions], HandlerResult]
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """A verified webhook: its ``webhook-id`` and its events in delivery order."""

    webhook_id: str
    events: list[TunnelEvent]


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """The HTTP answer to give the broker, independent of any framework."""

    status: int
    body: bytes
    media_type: str = "application/json"


def problem_response(error: WebhookError) -> WebhookResponse:
    """401/400 as problem details, so the broker's logs say why a delivery was refused."""
    body = {
        "type": "about:blank",
        "title": "Webhook refused",
        "status": error.status,
        "detail": str(error),
        "code": error.code,
    }
    return WebhookResponse(error.status, _encode(body).encode(), "application/problem+json")


def actions_response(actions: list[dict[str, Any]]) -> WebhookResponse:
    """200 with the actions to carry out; an empty list just acknowledges the batch."""
    return WebhookResponse(200, _encode({"actions": actions}).encode())


class WebhookHandler:
    """Register handlers with decorators, then mount it with an integration::

        hooks = WebhookHandler(secrets=["whsec_..."])

        @hooks.on_message
        async def echo(event: TunnelMessage, actions: Actions) -> None:
            actions.reply(event.text or "")

    Several handlers may be registered per type; they run in registration order, after the
    ``on_event`` handlers, one event after another in delivery order.
    """

    def __init__(
        self, secrets: str | Iterable[str], *, tolerance: float | timedelta = DEFAULT_TOLERANCE
    ) -> None:
        self.verifier = WebhookVerifier(secrets, tolerance=tolerance)
        # Keyed by event class; the typed decorators guarantee each list only holds handlers
        # that accept that class, so storage can be loosely typed.
        self._handlers: dict[type[TunnelEvent], list[_AnyHandler]] = {
            TunnelEvent: [],
            TunnelConnected: [],
            TunnelMessage: [],
            TunnelClosed: [],
        }

    def __repr__(self) -> str:
        return f"WebhookHandler({self.verifier!r})"

    # ------------------------------------------------------------------ registration

    def on_connected(self, handler: _C) -> _C:
        """Register ``handler(event: TunnelConnected, actions)``; reject with ``actions.reject``."""
        self._handlers[TunnelConnected].append(handler)
        return handler

    def on_message(self, handler: _M) -> _M:
        """Register ``handler(event: TunnelMessage, actions)``."""
        self._handlers[TunnelMessage].append(handler)
        return handler

    def on_closed(self, handler: _X) -> _X:
        """Register ``handler(event: TunnelClosed, actions)``."""
        self._handlers[TunnelClosed].append(handler)
        return handler

    def on_event(self, handler: _A) -> _A:
        """Register ``handler(event, actions)`` for every event, including types this SDK does
        not know (``UnknownEvent``): for logging, metrics, de-duplication."""
        self._handlers[TunnelEvent].append(handler)
        return handler

    # ------------------------------------------------------------------ processing

    def verify(self, headers: Headers, body: bytes, *, now: float | None = None) -> WebhookBatch:
        """Check the signature and read the events; raises a ``WebhookError`` subclass."""
        webhook_id = self.verifier.verify(headers, body, now=now)
        return WebhookBatch(webhook_id, parse_events(body))

    def _handlers_for(self, event: TunnelEvent) -> list[_AnyHandler]:
        return self._handlers[TunnelEvent] + self._handlers.get(type(event), [])

    async def dispatch(self, events: Iterable[TunnelEvent]) -> list[dict[str, Any]]:
        """Run the handlers of each event in order; return the collected actions."""
        collected: list[dict[str, Any]] = []
        for event in events:
            actions = Actions(event, collected)
            for handler in self._handlers_for(event):
                result = handler(event, actions)
                if inspect.isawaitable(result):
                    await result
        return collected

    def dispatch_sync(self, events: Iterable[TunnelEvent]) -> list[dict[str, Any]]:
        """``dispatch`` for sync frameworks; async handlers run on a loop made on first need."""
        collected: list[dict[str, Any]] = []
        runner: asyncio.Runner | None = None
        try:
            for event in events:
                actions = Actions(event, collected)
                for handler in self._handlers_for(event):
                    result = handler(event, actions)
                    if inspect.isawaitable(result):
                        if runner is None:
                            runner = _new_runner(result)
                        runner.run(_await(result))
        finally:
            if runner is not None:
                runner.close()
        return collected

    async def handle(
        self, headers: Headers, body: bytes, *, now: float | None = None
    ) -> WebhookResponse:
        """Verify, dispatch and answer; refused requests get 401/400 and run no handler."""
        try:
            batch = self.verify(headers, body, now=now)
        except WebhookError as error:
            return problem_response(error)
        return actions_response(await self.dispatch(batch.events))

    def handle_sync(
        self, headers: Headers, body: bytes, *, now: float | None = None
    ) -> WebhookResponse:
        """``handle`` for sync frameworks (Flask, Django)."""
        try:
            batch = self.verify(headers, body, now=now)
        except WebhookError as error:
            return problem_response(error)
        return actions_response(self.dispatch_sync(batch.events))


async def _await(result: Awaitable[None]) -> None:
    await result


def _new_runner(pending: Awaitable[None]) -> asyncio.Runner:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.Runner()
    if inspect.iscoroutine(pending):
        pending.close()  # never to be awaited; closing avoids a "never awaited" warning
    raise RuntimeError(
        "an async webhook handler was called through handle_sync() inside a running event "
        "loop; use 'await hooks.handle(...)' (or the Starlette integration) instead"
    )

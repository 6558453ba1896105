"""The actions a webhook receiver may answer with, and carrying them out.

Validation is per action: one malformed action is logged and skipped, the others are
still carried out in order, so a receiver bug degrades one reply instead of all. Actions
go through the backend like API calls do, so a reply reaches a tunnel wherever it is; a
``send`` counts against the app's message quota as a push does (refused past it: logged
and counted as a bad action).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from tunnel_broker.apps import App
from tunnel_broker.backend.base import Backend
from tunnel_broker.errors import (
    ActionError,
    BackendUnavailable,
    MessageQuotaExceeded,
    TooManyGroups,
)
from tunnel_broker.logs import LogThrottle
from tunnel_broker.metrics import Metrics
from tunnel_broker.shapes import (
    CloseFields,
    GroupName,
    Id,
    Payload,
    Strict,
    TargetModel,
    check_id,
)
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.usage.pushes import count_push
from tunnel_broker.validation import describe
from tunnel_broker.webhooks.events import EncodedEvent

__all__ = ["ActionError", "ActionRunner", "default_tunnel"]

logger = logging.getLogger("tunnel_broker.webhooks.actions")
# A faulty receiver can answer every batch with bad actions: say so, without flooding.
_errors = LogThrottle(logger)


class _ActionBase(Strict):
    event_id: str | None = None


class SendAction(_ActionBase, Payload):
    type: Literal["send"]
    to: TargetModel | None = None


class CloseAction(_ActionBase, CloseFields):
    type: Literal["close"]
    tunnel_id: Id | None = None


class GroupAction(_ActionBase):
    type: Literal["join", "leave"]
    tunnel_id: Id | None = None
    group: GroupName


Action = Annotated[SendAction | CloseAction | GroupAction, Field(discriminator="type")]

_FAST_KEYS = frozenset({"type", "to", "data", "event_id"})
_action_adapter: TypeAdapter[SendAction | CloseAction | GroupAction] = TypeAdapter(Action)


def default_tunnel(events: list[EncodedEvent], event_id: str | None) -> str:
    """The tunnel an action without an explicit target is about: the one of the event it
    names, or the only tunnel of the batch."""
    if event_id is not None:
        for event in events:
            if event.id == event_id:
                return event.tunnel_id
        raise ActionError(f"event_id {event_id!r} is not in this batch")
    tunnels = {e.tunnel_id for e in events}
    if len(tunnels) == 1:
        return tunnels.pop()
    raise ActionError(
        "the batch holds several tunnels: name one with 'to'/'tunnel_id' or 'event_id'"
    )


def _plain_text_reply(raw: Any) -> tuple[str, str] | None:
    """``(tunnel_id, text)`` of the most common action by far, a text ``send`` to one
    tunnel, recognised without the schema machinery; None for anything else (or anything
    odd), which takes the validated path."""
    if not isinstance(raw, dict) or raw.get("type") != "send" or raw.keys() - _FAST_KEYS:
        return None
    to, data = raw.get("to"), raw.get("data")
    if not isinstance(data, str) or not isinstance(to, dict) or to.keys() != {"tunnels"}:
        return None
    if not isinstance(raw.get("event_id", ""), str):
        return None  # the validated path reports it
    if not data.isascii():
        return None  # the validated path checks the text can be sent
    tunnel_ids = to["tunnels"]
    if not isinstance(tunnel_ids, list) or len(tunnel_ids) != 1:
        return None
    tunnel_id = tunnel_ids[0]
    if not isinstance(tunnel_id, str):
        return None
    try:
        check_id(tunnel_id)
    except ValueError:
        return None  # the validated path reports it
    return tunnel_id, data


class ActionRunner:
    def __init__(self, backend: Backend, hub: Hub, metrics: Metrics | None = None) -> None:
        self.backend = backend
        self.hub = hub
        self.metrics = metrics

    async def run(
        self, app: App, events: list[EncodedEvent], actions: list[dict[str, Any]]
    ) -> None:
        for index, raw in enumerate(actions):
            try:
                reply = _plain_text_reply(raw)
                if reply is not None:
                    await self._send(app, Target.tunnel(reply[0]), reply[1])
                    continue
                action = _action_adapter.validate_python(raw)
                await self._run_one(app, events, action)
            except ValidationError as exc:
                self._failed(app, "app %s: webhook action #%d is invalid: %s", index, describe(exc))
            except (ActionError, TooManyGroups) as exc:
                self._failed(app, "app %s: webhook action #%d skipped: %s", index, exc)
            except MessageQuotaExceeded as exc:
                if self.metrics is not None:
                    self.metrics.quota_refusals.labels(app.id, "messages").inc()
                self._failed(app, "app %s: webhook action #%d refused: %s", index, exc)
            except BackendUnavailable:
                self._failed(app, "app %s: webhook action #%d failed: %s", index, "backend down")

    async def _send(self, app: App, target: Target, payload: str | bytes) -> None:
        """A reply's message: within the app's message quota, counted once."""
        limits = app.limits
        if limits.message_quota is not None:
            await self.backend.quotas.acquire(app.id, limits, 1)
        await self.backend.push(app.id, target, payload)
        count_push(self.hub.usage.of(app.id), app.id, target, payload, "reply")

    def _failed(self, app: App, message: str, index: int, why: object) -> None:
        if self.metrics is not None:
            self.metrics.webhook_bad_actions.labels(app.id).inc()
        _errors.error(app.id, message, app.id, index, why)

    async def _run_one(
        self, app: App, events: list[EncodedEvent], action: SendAction | CloseAction | GroupAction
    ) -> None:
        if isinstance(action, SendAction):
            target = (
                action.to.to_target()
                if action.to is not None
                else Target.tunnel(default_tunnel(events, action.event_id))
            )
            await self._send(app, target, action.payload())
            return
        tunnel_id = action.tunnel_id or default_tunnel(events, action.event_id)
        if isinstance(action, CloseAction):
            code = action.code
            reason = action.reason
            if code is None:
                # Closing a tunnel whose tunnel.connected is being answered is a refusal.
                pending = self.hub.awaiting_approval(app.id, tunnel_id)
                code = CloseCode.REJECTED if pending else CloseCode.NORMAL
                reason = reason or ("rejected" if pending else "closed_by_business")
            await self.backend.close(app.id, Target.tunnel(tunnel_id), code, reason)
        elif action.type == "join":
            await self.backend.join(
                app.id, tunnel_id, action.group, app.limits.max_groups_per_tunnel
            )
        else:
            await self.backend.leave(app.id, tunnel_id, action.group)

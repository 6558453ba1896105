"""Carrying out the actions a webhook receiver answered with.

Validation is per action: one malformed action is logged and skipped, the others are
still carried out in order, so a receiver bug degrades one reply instead of all.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tunnel_broker.apps import App
from tunnel_broker.backend.base import Backend, BackendUnavailable
from tunnel_broker.closecodes import CloseCode
from tunnel_broker.events import EncodedEvent
from tunnel_broker.hub import Hub
from tunnel_broker.schemas import Action, CloseAction, GroupAction, SendAction
from tunnel_broker.targets import Target

logger = logging.getLogger("tunnel_broker.actions")

_FAST_KEYS = frozenset({"type", "to", "data", "event_id"})
_action_adapter: TypeAdapter[SendAction | CloseAction | GroupAction] = TypeAdapter(Action)


class ActionError(ValueError):
    pass


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


class ActionRunner:
    def __init__(self, backend: Backend, hub: Hub) -> None:
        self.backend = backend
        self.hub = hub

    async def run(
        self, app: App, events: list[EncodedEvent], actions: list[dict[str, Any]]
    ) -> None:
        for index, raw in enumerate(actions):
            if self._reply_to_local_tunnel(app, raw):
                continue
            try:
                action = _action_adapter.validate_python(raw)
                await self._run_one(app, events, action)
            except ValidationError as exc:
                fields = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_input=False, include_url=False)
                )
                logger.error("app %s: webhook action #%d is invalid: %s", app.id, index, fields)
            except ActionError as exc:
                logger.error("app %s: webhook action #%d skipped: %s", app.id, index, exc)
            except BackendUnavailable:
                logger.error(
                    "app %s: webhook action #%d failed: backend unavailable", app.id, index
                )

    def _reply_to_local_tunnel(self, app: App, raw: Any) -> bool:
        """The most common action by far, a text reply to one tunnel of this node, done
        without the schema machinery; anything else (or anything odd) returns False and
        takes the validated path."""
        if not isinstance(raw, dict) or raw.get("type") != "send" or raw.keys() - _FAST_KEYS:
            return False
        to, data = raw.get("to"), raw.get("data")
        if not isinstance(data, str) or not isinstance(to, dict) or to.keys() != {"tunnels"}:
            return False
        tunnel_ids = to["tunnels"]
        if not isinstance(tunnel_ids, list) or len(tunnel_ids) != 1:
            return False
        tunnel_id = tunnel_ids[0]
        if not isinstance(tunnel_id, str) or self.hub.get(app.id, tunnel_id) is None:
            return False
        self.hub.deliver(app.id, Target.tunnel(tunnel_id), data)
        return True

    async def _run_one(
        self, app: App, events: list[EncodedEvent], action: SendAction | CloseAction | GroupAction
    ) -> None:
        if isinstance(action, SendAction):
            target = (
                action.to.to_target()
                if action.to is not None
                else Target.tunnel(default_tunnel(events, action.event_id))
            )
            await self.backend.deliver(app.id, target, action.payload())
            return
        tunnel_id = action.tunnel_id or default_tunnel(events, action.event_id)
        if isinstance(action, CloseAction):
            code = action.code
            reason = action.reason
            if code is None:
                local = self.hub.get(app.id, tunnel_id)
                pending = local is not None and not local.approved.done()
                code = CloseCode.REJECTED if pending else CloseCode.NORMAL
                reason = reason or ("rejected" if pending else "closed_by_business")
            await self.backend.close(app.id, Target.tunnel(tunnel_id), code, reason)
        elif action.type == "join":
            await self.backend.join(app.id, tunnel_id, action.group)
        else:
            await self.backend.leave(app.id, tunnel_id, action.group)

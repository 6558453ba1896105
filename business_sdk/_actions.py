"""What a webhook handler asks the broker to do, collected into the webhook's answer.

A handler gets an ``Actions`` bound to the event it handles, so the common cases need no ids:
``actions.reply("hi")`` sends to the event's tunnel and ``actions.close()`` closes it. Every
action names its tunnel explicitly (plus the ``event_id`` it answers), because one batch mixes
events of many tunnels and the broker should never have to guess. Actions of all events of a
batch go into one list, in the order the handlers asked, and the broker carries them out in
that order.
"""

from __future__ import annotations

from typing import Any

from business_sdk._events import TunnelEvent
from business_sdk._payload import Data, close_fields, encode_data
from business_sdk._targets import Target

REJECT_CODE = 4403


class Actions:
    """The handler's side of the answer; bound to ``event``, appending to a batch-wide list."""

    __slots__ = ("_actions", "event")

    def __init__(self, event: TunnelEvent, actions: list[dict[str, Any]] | None = None) -> None:
        self.event = event
        self._actions: list[dict[str, Any]] = [] if actions is None else actions

    def _add(self, action: dict[str, Any]) -> None:
        action["event_id"] = self.event.id
        self._actions.append(action)

    def reply(self, data: Data) -> None:
        """Send ``data`` back to the tunnel this event came from."""
        self.send(Target.tunnels(self.event.tunnel_id), data)

    def send(self, to: Target, data: Data) -> None:
        """Send ``data`` to any target (other users, a group, everyone)."""
        if not isinstance(to, Target):
            raise TypeError(f"'to' must be a Target, not {type(to).__name__}")
        self._add({"type": "send", "to": to.to_json(), **encode_data(data)})

    def close(
        self, tunnel_id: str | None = None, *, code: int | None = None, reason: str | None = None
    ) -> None:
        """Close a tunnel, this event's by default. In answer to ``tunnel.connected`` this
        refuses the connection (the broker uses 4403 when no code is given)."""
        self._add(
            {
                "type": "close",
                "tunnel_id": tunnel_id or self.event.tunnel_id,
                **close_fields(code, reason),
            }
        )

    def reject(self, reason: str = "", *, code: int = REJECT_CODE) -> None:
        """Refuse this connection: the client sees close code 4403 (or ``code``) and ``reason``."""
        self.close(code=code, reason=reason)

    def join(self, group: str, tunnel_id: str | None = None) -> None:
        """Add a tunnel (this event's by default) to ``group``."""
        self._group("join", group, tunnel_id)

    def leave(self, group: str, tunnel_id: str | None = None) -> None:
        """Remove a tunnel (this event's by default) from ``group``."""
        self._group("leave", group, tunnel_id)

    def _group(self, kind: str, group: str, tunnel_id: str | None) -> None:
        if not isinstance(group, str) or not group:
            raise ValueError("group must be a non-empty string")
        self._add({"type": kind, "tunnel_id": tunnel_id or self.event.tunnel_id, "group": group})

    def to_list(self) -> list[dict[str, Any]]:
        """The wire form of every action collected so far (the whole batch's)."""
        return list(self._actions)

"""Webhook events as typed objects, read from a verified ``{"events": [...]}`` body.

Every event carries the tunnel's ``user_id``, ``identity`` and ``meta`` (from the token the
business server minted), so handlers never need a tunnel-id-to-user map of their own. Event
types this SDK does not know yet become ``UnknownEvent`` instead of failing the batch, so a newer
broker does not break an older receiver.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from business_sdk._exceptions import WebhookPayloadError
from business_sdk._models import parse_time


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelEvent:
    """What every event has. ``id`` is unique per event and stable across redeliveries, so it
    is the key for de-duplicating a batch the broker had to send twice."""

    type_name: ClassVar[str] = ""

    id: str
    type: str
    time: datetime
    app_id: str
    tunnel_id: str
    user_id: str
    identity: Mapping[str, Any]
    meta: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelConnected(TunnelEvent):
    """A client opened the tunnel. Answer with ``actions.reject()`` to refuse it (4403)."""

    type_name: ClassVar[str] = "tunnel.connected"


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelMessage(TunnelEvent):
    """A client sent a frame. ``text`` is set for text frames (``None`` for binary ones);
    ``data`` is always the bytes (UTF-8 of the text for text frames)."""

    type_name: ClassVar[str] = "tunnel.message"

    text: str | None
    data: bytes

    @property
    def is_binary(self) -> bool:
        return self.text is None

    def json(self) -> Any:
        """The payload parsed as JSON, the usual format of mini-program messages."""
        return json.loads(self.data if self.text is None else self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelClosed(TunnelEvent):
    """The tunnel closed, for whatever reason (client, server, broker, a node that died):
    the broker guarantees this event, so it is the place to clean up."""

    type_name: ClassVar[str] = "tunnel.closed"

    code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent(TunnelEvent):
    """An event type newer than this SDK; ``raw`` has all of it."""


def _text(event: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = event.get(key, default)
    if not isinstance(value, str):
        raise WebhookPayloadError(f"event member {key!r} must be a string")
    return value


def _object(event: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = event.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"event member {key!r} must be an object")
    return value


def _message_payload(event: Mapping[str, Any]) -> tuple[str | None, bytes]:
    text = event.get("data")
    if isinstance(text, str):
        return text, text.encode()
    encoded = event.get("data_base64")
    if isinstance(encoded, str):
        try:
            return None, base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookPayloadError("'data_base64' is not valid base64") from None
    raise WebhookPayloadError("a tunnel.message event needs 'data' or 'data_base64'")


def parse_event(event: Any) -> TunnelEvent:
    """One event object to its typed form; ``WebhookPayloadError`` if it is malformed."""
    if not isinstance(event, dict):
        raise WebhookPayloadError("each event must be a JSON object")
    try:
        when = parse_time(event.get("time"))
    except (TypeError, ValueError):
        raise WebhookPayloadError("event member 'time' must be an ISO-8601 timestamp") from None
    common: dict[str, Any] = {
        "id": _text(event, "id"),
        "type": _text(event, "type"),
        "time": when,
        "app_id": _text(event, "app_id", ""),
        "tunnel_id": _text(event, "tunnel_id"),
        "user_id": _text(event, "user_id"),
        "identity": _object(event, "identity"),
        "meta": _object(event, "meta"),
        "raw": event,
    }
    kind = common["type"]
    if kind == TunnelConnected.type_name:
        return TunnelConnected(**common)
    if kind == TunnelMessage.type_name:
        text, data = _message_payload(event)
        return TunnelMessage(**common, text=text, data=data)
    if kind == TunnelClosed.type_name:
        code = event.get("code", 1005)
        if isinstance(code, bool) or not isinstance(code, int):
            raise WebhookPayloadError("event member 'code' must be an integer")
        reason = event.get("reason") or ""
        if not isinstance(reason, str):
            raise WebhookPayloadError("event member 'reason' must be a string")
        return TunnelClosed(**common, code=code, reason=reason)
    return UnknownEvent(**common)


def parse_events(body: bytes | str) -> list[TunnelEvent]:
    """A webhook body (``{"events": [...]}``) to typed events, in delivery order."""
    try:
        decoded = json.loads(body)
    except ValueError:
        raise WebhookPayloadError("the webhook body is not JSON") from None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("events"), list):
        raise WebhookPayloadError('the webhook body must be {"events": [...]}')
    return [parse_event(event) for event in decoded["events"]]

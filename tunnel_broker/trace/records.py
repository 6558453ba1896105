"""What the live trace shows of an event, a push or a webhook delivery: ids, kinds and
sizes always; payloads only for an app that turned ``trace_payloads`` on, and then cut
to ``PAYLOAD_CHARS`` and with the values of secret-looking JSON keys replaced.

A trace is read in a browser by whoever holds the app's key; it must not become a way
around the app's own choice to keep payloads out of it, nor put a user's password on a
screen because a client sent one. No I/O here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from typing import Any

from tunnel_broker.targets import Target
from tunnel_broker.timestamps import iso_time
from tunnel_broker.webhooks.events import EncodedEvent

PAYLOAD_CHARS = 256
BINARY_PREVIEW_BYTES = 96
REDACTED = "[redacted]"
# Keys whose values are never shown, whatever the app allows.
SENSITIVE_KEY = re.compile(
    r"pass|secret|token|key|auth|session|cookie|credential|signature|skey|openid|unionid", re.I
)
MAX_REDACT_DEPTH = 16


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with the values of sensitive keys replaced, at any depth."""
    if depth > MAX_REDACT_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if SENSITIVE_KEY.search(str(k)) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    return value


def _shown_text(text: str) -> tuple[str, bool]:
    """The text as shown: JSON redacted (and compacted), then cut."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        with contextlib.suppress(ValueError, RecursionError):  # not JSON: shown as text
            text = json.dumps(redact(json.loads(text)), ensure_ascii=False, separators=(",", ":"))
    if len(text) > PAYLOAD_CHARS:
        return text[:PAYLOAD_CHARS], True
    return text, False


def payload_fields(payload: str | bytes, show: bool) -> dict[str, Any]:
    """Size (bytes on the wire), and with ``show`` a preview."""
    if isinstance(payload, str):
        size = len(payload) if payload.isascii() else len(payload.encode())
    else:
        size = len(payload)
    fields: dict[str, Any] = {"size": size}
    if not show:
        return fields
    if isinstance(payload, str):
        fields["data"], fields["truncated"] = _shown_text(payload)
    else:
        preview = payload[:BINARY_PREVIEW_BYTES]
        fields["data_base64"] = base64.b64encode(preview).decode()
        fields["truncated"] = len(payload) > BINARY_PREVIEW_BYTES
    return fields


def event_record(event: EncodedEvent, show: bool) -> dict[str, Any]:
    """A webhook event (connected, message, closed) as the trace shows it."""
    body = json.loads(event.body)
    record: dict[str, Any] = {
        "kind": "event",
        "at": body.get("time") or iso_time(time.time()),
        "type": event.type,
        "event_id": event.id,
        "tunnel_id": event.tunnel_id,
        "user_id": body.get("user_id"),
    }
    if event.type == "tunnel.message":
        if "data" in body:
            record.update(payload_fields(body["data"], show))
        else:
            record.update(payload_fields(base64.b64decode(body.get("data_base64", "")), show))
    elif event.type == "tunnel.closed":
        record["code"] = body.get("code")
        record["reason"] = body.get("reason")
    return record


def push_record(target: Target, payload: str | bytes, via: str, show: bool) -> dict[str, Any]:
    """A message the business server sent (API or webhook reply), once, fan-out aside."""
    to: dict[str, Any] = {"all": True} if target.kind == "all" else {target.kind: list(target.ids)}
    return {
        "kind": "push",
        "at": iso_time(time.time()),
        "target": to,
        "via": via,
        **payload_fields(payload, show),
    }


def delivery_record(delivery: dict[str, Any]) -> dict[str, Any]:
    """A webhook request's outcome (the deliveries log's record: no body, no secret)."""
    return {"kind": "delivery", **delivery}


def matches(record: dict[str, Any], tunnel_id: str | None, user_id: str | None) -> bool:
    """Whether a record concerns the tunnel and user a trace is filtered by. Deliveries
    carry many tunnels' events, so a filtered trace leaves them out."""
    if tunnel_id is None and user_id is None:
        return True
    kind = record.get("kind")
    if kind == "event":
        return (tunnel_id is None or record.get("tunnel_id") == tunnel_id) and (
            user_id is None or record.get("user_id") == user_id
        )
    if kind == "push":
        target = record.get("target", {})
        if target.get("all"):
            return True
        if tunnel_id is not None and tunnel_id in target.get("tunnels", ()):
            return True
        return user_id is not None and user_id in target.get("users", ())
    return kind == "dropped"

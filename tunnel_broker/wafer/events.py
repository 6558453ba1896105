"""Tunnel events in the legacy shape, for the business server that requested the tunnel.

Wafer tunnels' events travel through the broker like native ones (the same queue, order,
journal and retries: ``webhooks/``); only the last step differs. Each goes alone to the
receive URL its tunnel was requested with, as ``{"data": D, "signature": sha1(D + key)}``
where ``D`` is ``{"tunnelId", "type": "connect" | "message" | "close", "content"?}`` as
JSON text; a message's content is the packet content exactly as the client sent it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunnel_broker.wafer.envelope import sign
from tunnel_broker.webhooks.events import EncodedEvent

TUNNEL_PREFIX = "wtn_"  # Wafer tunnels' ids: their events take the legacy way
RECEIVE_URL = "wafer_receive_url"  # in the tunnel's meta

_TYPES = {"tunnel.connected": "connect", "tunnel.message": "message", "tunnel.closed": "close"}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def is_wafer_tunnel(tunnel_id: str) -> bool:
    return tunnel_id.startswith(TUNNEL_PREFIX)


@dataclass(frozen=True, slots=True)
class LegacyEvent:
    receive_url: str
    body: bytes


def legacy_event(event: EncodedEvent, key: str) -> LegacyEvent:
    """The legacy request of one event of a Wafer tunnel, signed with ``key``."""
    native: dict[str, Any] = json.loads(event.body)
    data: dict[str, Any] = {"tunnelId": event.tunnel_id, "type": _TYPES[event.type]}
    if event.type == "tunnel.message":
        data["content"] = native.get("data", "")
    text = _dumps(data)
    body = _dumps({"data": text, "signature": sign(text, key)}).encode()
    return LegacyEvent(str(native["meta"][RECEIVE_URL]), body)

"""Wafer socket packets: text frames ``type`` or ``type:content``.

The client splits a frame at the first ``:`` and takes the rest, colons included, as the
content. What the broker relays is ``message`` packets, whose content is the JSON text
``{"type": T, "content": C}``; the client's SDK throws on a ``message`` whose content is
not a JSON object, and the business servers' SDKs on one that is not an object either,
so the broker neither sends nor forwards one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MESSAGE = "message"
PING = "ping"
PONG = "pong"
CLOSE = "close"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Packet:
    type: str
    content: str | None  # None: a packet without ``:``


def parse(frame: str) -> Packet:
    kind, colon, content = frame.partition(":")
    return Packet(kind, content if colon else None)


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def message_frame(content: str) -> str:
    return f"{MESSAGE}:{content}"


def timeout_frame(seconds: float) -> str:
    """Sets the client's heartbeat period (sent first on a new socket: the client SDKs
    leave a pending pong timer running if it arrives later)."""
    return f"{TIMEOUT}:{seconds:g}"

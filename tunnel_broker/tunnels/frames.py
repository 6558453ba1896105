"""A server's WebSocket data frame, encoded once: the bytes a push writes to every socket.

Frames from a server are not masked (RFC 6455, 5.1), so one push to ten thousand tunnels
is one encoding and ten thousand ``write`` calls of the same bytes, where the protocol
library built and serialized a frame object for each socket.
"""

from __future__ import annotations

import struct
from collections.abc import MutableMapping
from typing import Any

TEXT = 0x81  # FIN + text
BINARY = 0x82  # FIN + binary


def encode(payload: str | bytes) -> bytes:
    """One unfragmented, unmasked frame carrying ``payload`` (text if it is a ``str``)."""
    if isinstance(payload, str):
        data, first = payload.encode(), TEXT
    else:
        data, first = bytes(payload), BINARY
    size = len(data)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + data


def of_message(message: MutableMapping[str, Any]) -> bytes:
    """The frame of an ASGI ``websocket.send`` message, encoded the first time it is asked
    for and kept in the message: one push shares its message among all its sockets."""
    frame = message.get("frame")
    if frame is None:
        text = message.get("text")
        frame = message["frame"] = encode(text if text is not None else message["bytes"])
    return frame

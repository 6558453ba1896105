"""The JSON messages the page and the demo server exchange over the tunnel.

Every frame is a JSON object with a ``type``; the server answers a bad frame with an
``error`` message instead of closing the tunnel, so a typo in the page never costs the
user their connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_FRAME_CHARS = 64_000


class ProtocolError(ValueError):
    """A frame the server cannot act on; its text goes back to the client."""


def encode(kind: str, **fields: Any) -> str:
    """One server-to-client frame: compact JSON, non-ASCII kept (names are often Chinese)."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def decode(text: str | None) -> dict[str, Any]:
    """Parse a client frame, refusing anything that is not a JSON object with a ``type``."""
    if text is None:
        raise ProtocolError("binary frames are not part of this protocol")
    if len(text) > MAX_FRAME_CHARS:
        raise ProtocolError("frame too long")
    try:
        value = json.loads(text)
    except ValueError:
        raise ProtocolError("frames must be JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError('frames must be JSON objects with a "type"')
    return value


def text_field(message: Mapping[str, Any], key: str, *, max_len: int) -> str:
    """A required, non-empty, trimmed string field of at most ``max_len`` characters."""
    value = message.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{key} must be a non-empty string")
    value = value.strip()
    if len(value) > max_len:
        raise ProtocolError(f"{key} is longer than {max_len} characters")
    return value


def nick_of(identity: Mapping[str, Any], fallback: str) -> str:
    """The display name of a verified identity (WeChat's ``nickName``), else ``fallback``."""
    nick = identity.get("nickName")
    return nick if isinstance(nick, str) and nick else fallback

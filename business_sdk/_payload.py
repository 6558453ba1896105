"""Message payloads and close requests in their wire form, shared by the API and webhooks.

WebSocket frames are text or binary and the broker keeps that distinction, so ``str`` travels as
``data`` (a text frame) and ``bytes`` as ``data_base64`` (a binary frame). Close codes are
checked here, before any request, because a wrong code is a programming error that is easier to
find at the call site than in a 422 or an ignored webhook action.
"""

from __future__ import annotations

import base64
from typing import Any

Data = str | bytes | bytearray | memoryview
"""A message payload: ``str`` is sent as a text frame, anything bytes-like as a binary frame."""


def encode_data(data: Data) -> dict[str, str]:
    """``{"data": text}`` or ``{"data_base64": ...}``; anything else is a ``TypeError`` now
    rather than an opaque 422 later."""
    if isinstance(data, str):
        return {"data": data}
    if isinstance(data, bytes | bytearray | memoryview):
        return {"data_base64": base64.b64encode(data).decode("ascii")}
    raise TypeError(f"message data must be str or bytes, not {type(data).__name__}")


def check_close_code(code: int | None) -> None:
    """A business server may choose 1000 or 4000-4999; other codes are the broker's own."""
    if code is None:
        return
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"close code must be an int, not {type(code).__name__}")
    if code != 1000 and not 4000 <= code <= 4999:
        raise ValueError(f"close code must be 1000 or within 4000-4999, got {code}")


MAX_REASON_BYTES = 123
"""A WebSocket close frame holds at most 123 bytes of reason, counted in UTF-8."""


def check_close_reason(reason: str | None) -> None:
    """A reason that does not fit a close frame would make the close fail on the wire (the
    client would see 1006), so it is refused here: at most 123 bytes of UTF-8, which is
    41 Chinese characters."""
    if reason is None:
        return
    if not isinstance(reason, str):
        raise TypeError(f"close reason must be a str, not {type(reason).__name__}")
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("close reason must be valid Unicode text") from None
    if size > MAX_REASON_BYTES:
        raise ValueError(f"close reason is {size} bytes of UTF-8; at most {MAX_REASON_BYTES}")


def close_fields(code: int | None, reason: str | None) -> dict[str, Any]:
    """The optional ``{"code", "reason"}`` members; empty when neither is given."""
    check_close_code(code)
    check_close_reason(reason)
    fields: dict[str, Any] = {}
    if code is not None:
        fields["code"] = code
    if reason is not None:
        fields["reason"] = reason
    return fields

"""The reliable protocol's frames (``tb.reliable.v1``), free of I/O.

A client that asks for this WebSocket subprotocol at connect gets sequence numbers in
both directions, acknowledgements, and a resume after a drop (docs/api.md has the whole
protocol). Every frame starts with an ASCII header that ends at the first ``:``::

    m<seq>:<payload>   a message (either direction); seq 1, 2, 3... per direction
    a<seq>:            every message up to seq arrived (either direction)
    h:                 heartbeat (client), answered with the same frame (broker)
    w:<json>           welcome (broker, first frame of every socket)

A message's payload is text in a text frame and bytes in a binary frame; the header is
the same ASCII in both. The header costs the broker one concatenation per push, and no
payload is ever re-encoded (base64 or JSON escaping would cost more than the rest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SUBPROTOCOL = "tb.reliable.v1"

DATA = "m"
ACK = "a"
HEARTBEAT = "h"
WELCOME = "w"

MAX_SEQ = 2**53 - 1  # what a JavaScript number holds exactly
_MAX_DIGITS = len(str(MAX_SEQ))
_MAX_HEADER = 1 + _MAX_DIGITS + 1
HEARTBEAT_FRAME = "h:"


class FrameError(ValueError):
    """A frame that is not the protocol's: the socket is closed with 1002."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str
    seq: int = 0
    payload: str | bytes = ""


def parse(frame: str | bytes) -> Frame:
    """A client's frame: a message (``m``), an acknowledgement (``a``) or a heartbeat
    (``h``). Raises ``FrameError`` for anything else."""
    rest: str | bytes
    if isinstance(frame, str):
        colon = frame.find(":", 0, _MAX_HEADER)
        if colon < 1:
            raise FrameError("no header")
        kind, digits, rest = frame[0], frame[1:colon], frame[colon + 1 :]
    else:
        colon = frame.find(b":", 0, _MAX_HEADER)
        if colon < 1:
            raise FrameError("no header")
        kind = chr(frame[0])
        digits, rest = frame[1:colon].decode("ascii", "replace"), frame[colon + 1 :]
        if kind != DATA:
            raise FrameError("only messages may be binary")
    if kind == HEARTBEAT:
        if digits or rest:
            raise FrameError("a heartbeat is 'h:'")
        return Frame(HEARTBEAT)
    if kind not in (DATA, ACK):
        raise FrameError(f"unknown frame kind {kind!r}")
    seq = _seq(digits)
    if kind == ACK:
        if rest:
            raise FrameError("an acknowledgement carries nothing after its header")
        return Frame(ACK, seq)
    if seq == 0:
        raise FrameError("messages are numbered from 1")
    return Frame(DATA, seq, rest)


def _seq(digits: str) -> int:
    if not digits or len(digits) > _MAX_DIGITS or not digits.isdigit() or not digits.isascii():
        raise FrameError("a sequence number is 1 to 16 decimal digits")
    if len(digits) > 1 and digits[0] == "0":
        raise FrameError("a sequence number has no leading zeros")
    seq = int(digits)
    if seq > MAX_SEQ:
        raise FrameError("sequence number out of range")
    return seq


def data_frame(seq: int, payload: str | bytes) -> str | bytes:
    if isinstance(payload, str):
        return f"m{seq}:{payload}"
    return b"m%d:%b" % (seq, payload)


def ack_frame(seq: int) -> str:
    return f"a{seq}:"


def welcome_frame(tunnel_id: str, resumed: bool, accepted: int, window_seconds: float) -> str:
    """The first frame of every socket: whether it continues the tunnel's sequences
    (``resumed``), the last client message the broker accepted (the client sends again
    what comes after it), and how long a dropped socket stays resumable."""
    body = {
        "tunnel_id": tunnel_id,
        "resumed": resumed,
        "accepted": accepted,
        "resume_window_seconds": window_seconds,
    }
    return "w:" + json.dumps(body, separators=(",", ":"))


def resume_point(query_value: str | None) -> int | None:
    """The ``resume`` query parameter of a connect: the last message the client received
    (0: none yet), or None when absent (a new client, nothing to resume). Raises
    ``FrameError`` for a value that is not a sequence number."""
    if query_value is None:
        return None
    if query_value == "0":
        return 0
    return _seq(query_value)

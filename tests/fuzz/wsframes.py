"""WebSocket frames as a hostile client writes them, and hypothesis strategies for them.

A client library cannot send what these do: any opcode (reserved ones too), any FIN and
RSV bits, masked or not, any of the three length encodings (non-minimal ones too), a
length that lies about the payload (shorter, longer, or absurdly large), control frames
over 125 bytes or fragmented, continuation frames with nothing to continue, close frames
with any code and reason, text that is not UTF-8, and bytes that are not frames at all.

``clean_messages`` draws the opposite, sequences a correct client could send (fragmented
or not, with pings and pongs between the fragments), so that what the broker relays can
be compared with what was sent. ``parse_server_frames`` reads what the broker wrote.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

from hypothesis import strategies as st

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = (CLOSE, PING, PONG)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Close codes worth trying: the valid ones, the reserved ones a frame may never carry
# (1004-1006, 1015), the unassigned and out-of-range ones.
ODD_CLOSE_CODES = (
    *(0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010),
    *(1011, 1012, 1013, 1014, 1015, 1016, 1999, 2000, 2999, 3000, 3999, 4000, 4409),
    *(4999, 5000, 65535),
)
# Byte strings that are not UTF-8: a lone continuation byte, bytes UTF-8 never uses, an
# overlong encoding, a surrogate, a code point above U+10FFFF, a truncated sequence.
NOT_UTF8 = (
    *(b"\x80", b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"),
    *(b"\xe2\x82", b"\xf0\x9f\x98", b"a\xc3"),
)
HUGE_LENGTHS = (2**16 - 1, 2**16, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1)


def apply_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@dataclass(frozen=True)
class Frame:
    """One frame exactly as written: ``declared`` (when set) is announced instead of the
    payload's real length, and ``length_bits`` forces an encoding of the length (7, 16
    or 64 bits; a 7-bit field cannot hold more than 125, so larger values move up)."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    mask_key: bytes = b"\x37\xfa\x21\x3d"
    length_bits: Literal[7, 16, 64] | None = None
    declared: int | None = None

    def encode(self) -> bytes:
        length = len(self.payload) if self.declared is None else self.declared
        bits = self.length_bits or (7 if length < 126 else 16 if length < 2**16 else 64)
        if bits == 7 and length >= 126:
            bits = 16
        if bits == 16 and length >= 2**16:
            bits = 64
        head = bytes([(0x80 if self.fin else 0) | (self.rsv & 7) << 4 | (self.opcode & 0xF)])
        mask_bit = 0x80 if self.masked else 0
        if bits == 7:
            head += bytes([mask_bit | length])
        elif bits == 16:
            head += bytes([mask_bit | 126]) + struct.pack("!H", length)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
        if not self.masked:
            return head + self.payload
        return head + self.mask_key + apply_mask(self.payload, self.mask_key)


@dataclass(frozen=True)
class Garbage:
    """Bytes that are not meant to be a frame."""

    data: bytes

    def encode(self) -> bytes:
        return self.data


Item = Frame | Garbage


@dataclass(frozen=True)
class Message:
    """A message a correct client sends, for comparison with what the broker relays."""

    text: bool
    payload: bytes


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def handshake_request(path: str, host: str, key: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(key).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def accept_value(key: bytes) -> str:
    digest = hashlib.sha1((base64.b64encode(key).decode() + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


# ---- strategies ---------------------------------------------------------------------------

mask_keys = st.binary(min_size=4, max_size=4)
utf8_text = st.text(max_size=80).map(str.encode)
not_utf8 = st.builds(
    lambda before, bad, after: before + bad + after,
    utf8_text,
    st.sampled_from(NOT_UTF8),
    utf8_text,
)


def sized_payloads(largest: int) -> st.SearchStrategy[bytes]:
    """Small random payloads, and payloads of any size up to ``largest`` (cheap to build:
    what matters for size limits is the length, not the bytes)."""
    return st.one_of(
        st.binary(max_size=160),
        st.integers(min_value=0, max_value=largest).map(lambda n: b"\xa5" * n),
    )


def lies(real: int) -> st.SearchStrategy[int | None]:
    """A declared length: the truth (None), a little or a lot more or less, or absurd."""
    return st.one_of(
        st.none(),
        st.integers(min_value=0, max_value=real + 300),
        st.sampled_from(HUGE_LENGTHS),
    )


@st.composite
def any_frames(draw: st.DrawFn, largest: int) -> Frame:
    """Anything a frame header can say."""
    payload = draw(sized_payloads(largest))
    return Frame(
        opcode=draw(st.integers(min_value=0, max_value=15)),
        payload=payload,
        fin=draw(st.booleans()),
        rsv=draw(st.integers(min_value=0, max_value=7)),
        masked=draw(st.booleans()),
        mask_key=draw(mask_keys),
        length_bits=draw(st.sampled_from([None, 7, 16, 64])),
        declared=draw(lies(len(payload))),
    )


@st.composite
def control_frames(draw: st.DrawFn) -> Frame:
    """Pings, pongs and closes, up to a little over the 125 bytes they may hold, FIN or
    not (a fragmented control frame is a protocol error)."""
    opcode = draw(st.sampled_from(CONTROL))
    payload = draw(close_payloads() if opcode == CLOSE else st.binary(max_size=130))
    fin = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
    return Frame(opcode, payload, fin=fin, mask_key=draw(mask_keys))


def close_payloads() -> st.SearchStrategy[bytes]:
    """Empty, one byte (never valid), or a code with a reason: odd codes, any code, a
    reason that is too long or not UTF-8."""
    codes = st.one_of(st.sampled_from(ODD_CLOSE_CODES), st.integers(0, 65535))
    reasons = st.one_of(utf8_text, not_utf8, st.integers(110, 140).map(lambda n: b"r" * n))
    return st.one_of(
        st.just(b""),
        st.binary(min_size=1, max_size=1),
        st.builds(close_payload, codes, reasons),
    )


@st.composite
def fragmented(draw: st.DrawFn, message: Message, interleave: bool = True) -> list[Frame]:
    """``message`` as one frame or several (cut anywhere, inside a UTF-8 sequence too),
    with valid pings and pongs between the fragments when ``interleave``."""
    payload = message.payload
    cuts = sorted(
        draw(st.lists(st.integers(min_value=0, max_value=len(payload)), max_size=3, unique=True))
    )
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames: list[Frame] = []
    for index, piece in enumerate(pieces):
        opcode = (TEXT if message.text else BINARY) if index == 0 else CONT
        if interleave and index > 0 and draw(st.booleans()):
            ping = draw(st.sampled_from([PING, PONG]))
            frames.append(Frame(ping, draw(st.binary(max_size=125)), mask_key=draw(mask_keys)))
        frames.append(
            Frame(
                opcode,
                piece,
                fin=index == len(pieces) - 1,
                mask_key=draw(mask_keys),
                length_bits=draw(st.sampled_from([None, None, 16, 64])),
            )
        )
    return frames


def messages(largest: int) -> st.SearchStrategy[Message]:
    """Correct messages of at most ``largest`` bytes: text is UTF-8."""
    texts = st.text(max_size=60).map(str.encode) | st.integers(0, largest).map(
        lambda n: ("\u4e2d" * (n // 3)).encode()
    )
    binaries = st.binary(max_size=120) | st.integers(0, largest).map(lambda n: b"\x00" * n)
    return st.one_of(
        st.builds(Message, st.just(True), texts), st.builds(Message, st.just(False), binaries)
    )


@st.composite
def clean_messages(draw: st.DrawFn, largest: int) -> tuple[list[Message], list[Item]]:
    """Messages a correct client sends, and the frames it sends them in."""
    sent = draw(st.lists(messages(largest), min_size=1, max_size=6))
    frames: list[Item] = []
    for message in sent:
        frames.extend(draw(fragmented(message)))
    return sent, frames


@st.composite
def broken_fragmentation(draw: st.DrawFn) -> list[Item]:
    """Fragmentation a correct client never sends: a continuation with nothing to
    continue, a new message inside an unfinished one, a message never finished, a
    text message whose fragments are UTF-8 only once joined, or not even then."""
    first = draw(st.sampled_from([TEXT, BINARY]))
    body = draw(st.one_of(utf8_text, not_utf8))
    case = draw(st.sampled_from(["orphan", "nested", "unfinished", "split-invalid"]))
    key = draw(mask_keys)
    if case == "orphan":
        return [Frame(CONT, body, fin=draw(st.booleans()), mask_key=key)]
    if case == "nested":
        return [Frame(first, body, fin=False, mask_key=key), Frame(TEXT, b"x", mask_key=key)]
    if case == "unfinished":
        return [Frame(first, body, fin=False, mask_key=key), Frame(PING, b"p", mask_key=key)]
    bad = draw(st.sampled_from(NOT_UTF8))
    return [
        Frame(TEXT, b"ok" + bad[:1], fin=False, mask_key=key),
        Frame(CONT, bad[1:], mask_key=key),
    ]


@st.composite
def oversized(draw: st.DrawFn, limit: int, largest: int) -> list[Item]:
    """A correct message over ``limit`` bytes (up to ``largest``), whole or fragmented."""
    size = draw(st.integers(min_value=limit + 1, max_value=largest))
    message = Message(draw(st.booleans()), b"o" * size)
    return list(draw(fragmented(message, interleave=False)))


def hostile_items(limit: int, largest: int) -> st.SearchStrategy[list[Item]]:
    """A run of frames and bytes mixing every kind above (``limit``: the largest message
    the broker relays)."""
    single: st.SearchStrategy[list[Item]] = st.one_of(
        any_frames(largest).map(lambda f: [f]),
        oversized(limit, largest),
        control_frames().map(lambda f: [f]),
        broken_fragmentation(),
        clean_messages(largest).map(lambda pair: pair[1]),
        st.builds(Frame, st.just(TEXT), not_utf8, mask_key=mask_keys).map(lambda f: [f]),
        st.binary(min_size=1, max_size=64).map(lambda b: [Garbage(b)]),
    )
    return st.lists(single, min_size=1, max_size=5).map(lambda runs: [i for r in runs for i in r])


# ---- what the broker writes ---------------------------------------------------------------


@dataclass(frozen=True)
class ServerFrame:
    opcode: int
    fin: bool
    payload: bytes


def parse_server_frames(data: bytes) -> tuple[list[ServerFrame], list[str]]:
    """The frames in ``data`` (as a client reads them) and what is wrong with them for
    frames a server sends: masked, RSV bits, unknown opcodes, long or fragmented control
    frames, a bad close payload. A frame cut off at the end (the connection dropped
    mid-write) is not counted as a fault."""
    frames: list[ServerFrame] = []
    faults: list[str] = []
    at = 0
    while at + 2 <= len(data):
        head1, head2 = data[at], data[at + 1]
        length = head2 & 0x7F
        at += 2
        if length == 126:
            if at + 2 > len(data):
                break
            (length,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif length == 127:
            if at + 8 > len(data):
                break
            (length,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        if head2 & 0x80:
            faults.append("a server frame is masked")
            at += 4
        if at + length > len(data):
            break
        frame = ServerFrame(head1 & 0x0F, bool(head1 & 0x80), data[at : at + length])
        at += length
        frames.append(frame)
        if head1 & 0x70:
            faults.append(f"RSV bits set: {head1:#x}")
        if frame.opcode not in (CONT, TEXT, BINARY, *CONTROL):
            faults.append(f"reserved opcode {frame.opcode}")
        if frame.opcode in CONTROL and (len(frame.payload) > 125 or not frame.fin):
            faults.append(f"control frame {frame.opcode} of {len(frame.payload)} bytes")
        if frame.opcode == CLOSE:
            faults.extend(close_faults(frame.payload))
    return frames, faults


def close_faults(payload: bytes) -> list[str]:
    if not payload:
        return []
    if len(payload) == 1:
        return ["a close payload of one byte"]
    (code,) = struct.unpack("!H", payload[:2])
    faults = []
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        faults.append(f"close code {code} may not be sent")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        faults.append("close reason is not UTF-8")
    return faults


def close_code(frames: list[ServerFrame]) -> int | None:
    """The code of the broker's close frame, if it sent one (1005: one without a code)."""
    for frame in frames:
        if frame.opcode == CLOSE:
            return struct.unpack("!H", frame.payload[:2])[0] if len(frame.payload) >= 2 else 1005
    return None

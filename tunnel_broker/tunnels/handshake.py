"""A tunnel's WebSocket opening handshake (RFC 6455, 4.2), answered from the request
head uvicorn's HTTP parser has already read.

Stock uvicorn writes the parsed head back out as bytes, has ``websockets`` parse it a
second time into its own request object, builds a response object with a freshly
formatted date, and serialises it. Here the head's header list is checked once, and the
answer is a few byte strings joined: about a tenth less broker CPU per WebSocket connect
(``bench/broker_bench.py --memory``, docs/performance.md). The checks and their answers
are those of ``websockets``' server (``ServerProtocol.process_request``), which stays the
reference: ``tests/unit/test_handshake.py`` holds every verdict against it. Header values
of the common forms are compared directly; any other form goes through ``websockets``'
own header parsers. The frames after the handshake remain ``websockets``' (``Protocol``).

No I/O here: ``protocol.py`` feeds the head in and writes what comes out.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from websockets.exceptions import InvalidHeaderFormat
from websockets.headers import parse_connection, parse_subprotocol, parse_upgrade
from websockets.utils import accept_key

Header = tuple[bytes, bytes]
Parser = Callable[[str], Sequence[str]]

_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
_NO_CLIENT = (
    "\n\nYou cannot access a WebSocket server directly with a browser. "
    "You need a WebSocket client.\n"
)
_REASONS = {
    400: "Bad Request",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid request: what the 101 answer needs, and what the application is told."""

    accept: str  # Sec-WebSocket-Accept
    subprotocols: list[str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An invalid request, and the HTTP answer that closes it."""

    status: int
    problem: str

    def response(self) -> bytes:
        body = f"Failed to open a WebSocket connection: {self.problem}.\n"
        extra = ""
        if self.status == 405:
            extra = "allow: GET\r\n"
        elif self.status == 426:
            body = body[:-1] + _NO_CLIENT
            extra = "upgrade: websocket\r\n"
        data = body.encode()
        return (
            f"HTTP/1.1 {self.status} {_REASONS[self.status]}\r\n{extra}"
            "content-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
        ).encode() + data


def check(method: str, http_version: str, headers: Sequence[Header]) -> Upgrade | Refusal:
    """The verdict on a WebSocket upgrade request; header names are lower case (as
    uvicorn's parser gives them), values as received."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in _WANTED:
            found.setdefault(name, []).append(value)
    # A body is refused first, as websockets' request parser does.
    if b"transfer-encoding" in found:
        return Refusal(400, "invalid request; transfer codings aren't supported")
    if any(v != b"0" for v in found.get(b"content-length", ())):
        return Refusal(400, "invalid request; unsupported request body")
    if method != "GET":
        return Refusal(405, f"invalid HTTP method; expected GET; got {method}")
    if http_version != "1.1":
        return Refusal(505, f"invalid HTTP protocol; expected HTTP/1.1; got HTTP/{http_version}")
    try:
        return _check(found)
    except InvalidHeaderFormat as exc:
        return Refusal(400, str(exc))


_WANTED = frozenset(
    {
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"origin",
        b"transfer-encoding",
        b"content-length",
    }
)


def _check(found: dict[bytes, list[bytes]]) -> Upgrade | Refusal:
    connection = _items(found, b"connection", parse_connection)
    if not any(option.lower() == "upgrade" for option in connection):
        return Refusal(426, _invalid("Connection", ", ".join(connection) or None))
    upgrade = _items(found, b"upgrade", parse_upgrade)
    if not (len(upgrade) == 1 and upgrade[0].lower() == "websocket"):
        return Refusal(426, _invalid("Upgrade", ", ".join(upgrade) or None))

    key = _single(found, b"sec-websocket-key", "Sec-WebSocket-Key")
    if isinstance(key, Refusal):
        return key
    try:
        raw_key = base64.b64decode(key, validate=True)
    except binascii.Error:
        raw_key = b""
    if len(raw_key) != 16:
        return Refusal(400, _invalid("Sec-WebSocket-Key", _text(key)))

    version = _single(found, b"sec-websocket-version", "Sec-WebSocket-Version")
    if isinstance(version, Refusal):
        return version
    if version != b"13":
        return Refusal(400, _invalid("Sec-WebSocket-Version", _text(version)))

    if len(found.get(b"origin", ())) > 1:
        return Refusal(400, _invalid("Origin", "multiple values"))
    subprotocols = _items(found, b"sec-websocket-protocol", parse_subprotocol)
    return Upgrade(accept_key(_text(key)), subprotocols)


def _items(found: dict[bytes, list[bytes]], name: bytes, parse: Parser) -> list[str]:
    """The comma-separated items of every ``name`` header; raises InvalidHeaderFormat."""
    items: list[str] = []
    for value in found.get(name, ()):
        if value.isalpha():  # one plain token, the form clients send: nothing to parse
            items.append(value.decode())
        else:
            items += parse(_text(value))
    return items


def _single(found: dict[bytes, list[bytes]], name: bytes, title: str) -> bytes | Refusal:
    values = found.get(name, [])
    if len(values) == 1:
        return values[0]
    return Refusal(400, _invalid(title, "multiple values" if values else None))


def _invalid(title: str, value: str | None) -> str:
    """``websockets``' wording (``InvalidHeader``)."""
    if value is None:
        return f"missing {title} header"
    return f"invalid {title} header: {value}" if value else f"empty {title} header"


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def switching_protocols(accept: str, subprotocol: str | None, headers: Iterable[Header]) -> bytes:
    """The 101 answer: ``headers`` (the server's defaults, the application's) first."""
    parts = [_SWITCHING]
    for name, value in headers:
        parts += [name, b": ", value, b"\r\n"]
    parts += [b"sec-websocket-accept: ", accept.encode(), b"\r\n"]
    if subprotocol:
        parts += [b"sec-websocket-protocol: ", subprotocol.encode(), b"\r\n"]
    parts.append(b"\r\n")
    return b"".join(parts)

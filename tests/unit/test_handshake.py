"""The broker's own opening handshake holds every verdict of ``websockets``' server, the
implementation it replaces on the tunnel path: the same status for any request head, the
same Sec-WebSocket-Accept, and the subprotocols the client offered."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.headers import parse_subprotocol
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from tunnel_broker.tunnels import handshake

KEY = base64.b64encode(b"0123456789abcdef").decode()

_VALUES: dict[str, list[str]] = {
    "connection": ["Upgrade", "upgrade", "keep-alive, Upgrade", "keep-alive", "Upgrade,", ",x"],
    "upgrade": ["websocket", "WebSocket", "websocket, h2c", "websocket/13", "h2c", "web socket"],
    "sec-websocket-key": [
        KEY,
        base64.b64encode(b"short").decode(),
        "not base64!",
        KEY[:-2],
        KEY + "AA==",
    ],
    "sec-websocket-version": ["13", "8", "13, 8", "013"],
    "sec-websocket-protocol": ["chat", "tb.reliable.v1", "a, b", "a b", ",", "x;y", "a,,b"],
    "origin": ["https://servicewechat.com", "null"],
    "content-length": ["0", "5"],
    "transfer-encoding": ["chunked"],
    "x-other": ["anything"],
}
_printable = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=12,
)


@st.composite
def request_heads(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]]]:
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "get"]))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    headers = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", KEY),
        ("sec-websocket-version", "13"),
    ]
    # Drop, repeat or change some of them, and add others.
    headers = [h for h in headers if draw(st.integers(0, 9)) > 0]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(sorted(_VALUES)))
        value = draw(st.sampled_from(_VALUES[name]) | _printable)
        headers.insert(draw(st.integers(0, len(headers))), (name, value))
    return method, version, headers


def _websockets_verdict(method: str, version: str, headers: list[tuple[str, str]]) -> tuple:
    """What ``websockets`` answers: a head its parser refuses (a body announced) gets 400
    from uvicorn; anything else the status of ``ServerProtocol.accept``, and for a 101 the
    subprotocols as ``websockets`` reads the header (uvicorn's own split kept the empty
    names of ``a,,b``)."""
    request_headers = Headers(headers)
    if "Transfer-Encoding" in request_headers or not set(
        request_headers.get_all("Content-Length")
    ) <= {"0"}:
        return (400,)
    request = Request("/v1/connect", request_headers)
    request.method, request.protocol = method, f"HTTP/{version}"  # type: ignore[misc]
    response = ServerProtocol().accept(request)
    if response.status_code != 101:
        return (response.status_code,)
    offered = [
        name
        for value in request_headers.get_all("Sec-WebSocket-Protocol")
        for name in parse_subprotocol(value)
    ]
    return 101, response.headers["Sec-WebSocket-Accept"], offered


def _our_verdict(method: str, version: str, headers: list[tuple[str, str]]) -> tuple:
    raw = [(n.encode(), v.encode("latin-1")) for n, v in headers]
    verdict = handshake.check(method, version, raw)
    if isinstance(verdict, handshake.Refusal):
        return (verdict.status,)
    return 101, verdict.accept, verdict.subprotocols


@settings(max_examples=600, deadline=None)
@given(request_heads())
def test_every_verdict_is_websockets_verdict(head: tuple[str, str, list[tuple[str, str]]]) -> None:
    assert _our_verdict(*head) == _websockets_verdict(*head)


def test_a_plain_upgrade_is_accepted_with_the_rfc_accept_key() -> None:
    headers = [
        (b"host", b"broker"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-protocol", b"tb.reliable.v1, chat"),
    ]
    verdict = handshake.check("GET", "1.1", headers)
    # RFC 6455, 1.3: the sample nonce's answer.
    assert verdict == handshake.Upgrade("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", ["tb.reliable.v1", "chat"])


def test_refusals_are_complete_http_answers() -> None:
    refusal = handshake.check("POST", "1.1", [])
    assert isinstance(refusal, handshake.Refusal)
    head, _, body = refusal.response().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 405 Method Not Allowed"
    assert b"allow: GET" in lines and b"connection: close" in lines
    assert f"content-length: {len(body)}".encode() in lines
    assert body.startswith(b"Failed to open a WebSocket connection: invalid HTTP method")
    missing = handshake.check("GET", "1.1", [(b"connection", b"Upgrade")])
    assert isinstance(missing, handshake.Refusal)
    assert missing.response().startswith(b"HTTP/1.1 426 Upgrade Required\r\nupgrade: websocket")


def test_the_101_carries_the_server_headers_and_the_chosen_subprotocol() -> None:
    answer = handshake.switching_protocols(
        accept_key(KEY), "tb.reliable.v1", [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]
    )
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
        b"sec-websocket-accept: " + accept_key(KEY).encode() + b"\r\n"
        b"sec-websocket-protocol: tb.reliable.v1\r\n\r\n"
    )
    assert b"sec-websocket-protocol" not in handshake.switching_protocols(accept_key(KEY), None, [])

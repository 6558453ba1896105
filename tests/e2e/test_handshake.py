"""The broker answers a tunnel's opening handshake itself (``tunnels/handshake.py``):
seen from a raw TCP client, a valid request gets RFC 6455's 101 and a working tunnel,
frames sent along with the request are not lost, and an invalid one gets an HTTP answer
that says what is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import os
from urllib.parse import urlsplit

from tests.fuzz.wsframes import Frame, accept_value, handshake_request, parse_server_frames
from tests.support.broker import BrokerHandle
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for, scaled


async def _open(broker: BrokerHandle) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(broker.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _connect_target(broker: BrokerHandle, user: str) -> tuple[str, str]:
    issued = await broker.client("demo").issue(user)
    url = urlsplit(issued["connect_url"])
    return f"{url.path}?{url.query}", issued["tunnel_id"]


async def test_frames_sent_with_the_request_reach_the_tunnel_after_the_101(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    frames = Frame(0x1, b"first").encode() + Frame(0x1, b"second").encode()
    # How the bytes may arrive: all in one read (the head's parser sees the frames
    # behind it), the head cut just before its end, or the frames in reads of their own
    # while the broker is still deciding (held until its 101 is written).
    for cut in ("none", "in-head", "after-head"):
        target, tunnel_id = await _connect_target(broker, f"early-{cut}")
        key = os.urandom(16)
        head = handshake_request(target, "broker", key)
        reader, writer = await _open(broker)
        if cut == "none":
            writer.write(head + frames)
        elif cut == "in-head":
            writer.write(head[:-1])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(head[-1:] + frames)
        else:
            writer.write(head)
            for byte in frames:
                await writer.drain()
                writer.write(bytes([byte]))
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        lines = answer.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols"
        assert f"sec-websocket-accept: {accept_value(key)}" in lines
        assert "upgrade: websocket" in lines and "connection: Upgrade" in lines
        received = b""
        while len(parsed := parse_server_frames(received)[0]) < 2:
            received += await asyncio.wait_for(reader.read(4096), scaled(5))
        assert parse_server_frames(received)[1] == []
        assert [f.payload for f in parsed] == [b"echo:first", b"echo:second"], cut
        await check_for(5, lambda t=tunnel_id: len(receiver.events_of(t, "tunnel.message")) == 2)
        await _close(writer)


async def test_an_invalid_handshake_gets_an_http_answer_naming_the_problem(
    broker: BrokerHandle,
) -> None:
    target, _ = await _connect_target(broker, "bad")
    good = handshake_request(target, "broker", os.urandom(16))
    cases = [
        (
            good.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
            b"400 Bad Request",
            b"invalid Sec-WebSocket-Version header: 8",
        ),
        (
            good.replace(b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: x"),
            b"400 Bad Request",
            b"invalid Sec-WebSocket-Key header",
        ),
        (good.replace(b"GET ", b"PUT ", 1), b"405 Method Not Allowed", b"expected GET"),
        (
            good.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n"),
            b"400 Bad Request",
            b"invalid Sec-WebSocket-Key header: multiple values",
        ),
    ]
    for request, status, problem in cases:
        reader, writer = await _open(broker)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), scaled(5))  # answered, then closed
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status), answer
        assert b"connection: close" in head
        assert problem in body, answer
        await _close(writer)

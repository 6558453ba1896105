"""The webhook HTTP client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tunnel_broker.webhooks.http_client import BodyTooLarge, WebhookClient, WebhookHttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    connections: list[asyncio.StreamWriter] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook?x=1"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def respond(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


async def test_post_sends_headers_and_body_and_reuses_the_connection() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(respond(b'{"ok":1}', extra=b"Retry-After: 3\r\n"))

    async with raw_server(handler) as url:
        client = WebhookClient("tb-test")
        for i in range(3):
            response = await client.post(url, b"body%d" % i, {"webhook-id": "m"}, 5, 1024)
            assert (response.status, response.body) == (200, b'{"ok":1}')
            assert response.headers["retry-after"] == "3"
        await client.close()
    assert connections == 1
    assert seen[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"webhook-id: m\r\n" in seen[0] and seen[0].endswith(b"body0")
    assert b"user-agent: tb-test\r\n" in seen[0]


async def test_chunked_and_connection_close_responses() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = WebhookClient("t")
        assert (await client.post(url, b"x", {}, 5, 1024)).body == b"abcde"
        assert (await client.post(url, b"x", {}, 5, 1024)).body == b"abcde"
        await client.close()


async def test_a_stale_keep_alive_connection_is_replaced_transparently() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        writer.write(respond(b"ok"))
        await writer.drain()
        # Keep-alive was promised, but the server drops the idle connection.
        await asyncio.sleep(0.05)
        writer.close()

    async with raw_server(handler) as url:
        client = WebhookClient("t")
        await client.post(url, b"1", {}, 5, 1024)
        await asyncio.sleep(0.2)
        assert (await client.post(url, b"2", {}, 5, 1024)).body == b"ok"
        await client.close()
    assert requests == 2


async def test_body_bounds_report_the_status() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(respond(b"x" * 5000))

    async with raw_server(handler) as url:
        client = WebhookClient("t")
        with pytest.raises(BodyTooLarge) as info:
            await client.post(url, b"x", {}, 5, 1000)
        assert info.value.status == 200
        await client.close()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "closed before"),
    ],
)
async def test_garbage_and_truncated_responses_fail_clearly(reply: bytes, match: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = WebhookClient("t")
        with pytest.raises(WebhookHttpError, match=match):
            await client.post(url, b"x", {}, 5, 1024)
        await client.close()


async def test_timeout_and_refused_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with raw_server(silent) as url:
        client = WebhookClient("t")
        with pytest.raises(TimeoutError):
            await client.post(url, b"x", {}, 0.2, 1024)
        await client.close()
    with pytest.raises(WebhookHttpError, match="cannot connect"):
        await WebhookClient("t").post(url, b"x", {}, 2, 1024)
    with pytest.raises(WebhookHttpError, match="http"):
        await WebhookClient("t").post("ftp://example.com/x", b"x", {}, 2, 1024)

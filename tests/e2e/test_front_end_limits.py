"""The HTTP front end refuses what would hold a broker's memory or connections: idle and
half-sent connections, oversized heads and request targets, connections beyond the cap.
Each refusal is a real HTTP answer (problem details), not a silent hang."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.support.broker import BrokerHandle, app_config, new_secret, run_broker
from tests.support.waiting import scaled


@pytest.fixture
async def guarded() -> AsyncIterator[BrokerHandle]:
    configs = [app_config("demo", "http://127.0.0.1:9/hook", new_secret())]
    async with run_broker(
        configs, header_timeout=0.5, max_header_bytes=4096, max_connections=200
    ) as handle:
        yield handle


async def _open(broker: BrokerHandle) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(broker.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):  # reset by the server: closed either way
        await writer.wait_closed()


async def _answer(reader: asyncio.StreamReader, seconds: float = 5) -> tuple[int, dict, bytes]:  # type: ignore[type-arg]
    """Status, problem body and what follows: the server must answer, then close."""
    raw = await asyncio.wait_for(reader.read(), scaled(seconds))  # read() returns at EOF
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    return status, json.loads(body), raw


async def test_idle_connections_are_closed_after_the_header_timeout(guarded: BrokerHandle) -> None:
    connections = [await _open(guarded) for _ in range(50)]
    for reader, _writer in connections:
        assert await asyncio.wait_for(reader.read(), scaled(5)) == b""  # closed, no answer
    for _, writer in connections:
        await _close(writer)


async def test_a_half_sent_head_gets_408(guarded: BrokerHandle) -> None:
    reader, writer = await _open(guarded)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
    status, problem, _ = await _answer(reader)
    assert (status, problem["code"]) == (408, "request_timeout")
    await _close(writer)


async def test_a_head_dribbled_byte_by_byte_still_times_out(guarded: BrokerHandle) -> None:
    reader, writer = await _open(guarded)

    async def dribble() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-a: b\r\n" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(dribble())
    try:
        status, problem, _ = await _answer(reader)
        assert (status, problem["code"]) == (408, "request_timeout")
    finally:
        task.cancel()
        await _close(writer)


async def test_oversized_headers_get_431_before_they_are_buffered(guarded: BrokerHandle) -> None:
    reader, writer = await _open(guarded)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 50_000)
    status, problem, _ = await _answer(reader)
    assert (status, problem["code"]) == (431, "headers_too_large")
    await _close(writer)


async def test_an_over_long_websocket_url_gets_a_real_414(guarded: BrokerHandle) -> None:
    reader, writer = await _open(guarded)
    writer.write(
        b"GET /v1/connect?token=" + b"A" * 9000 + b" HTTP/1.1\r\nhost: x\r\n"
        b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    status, problem, _ = await _answer(reader)
    assert (status, problem["code"]) == (414, "uri_too_long")
    await _close(writer)


async def test_connections_beyond_the_cap_get_503_and_the_rest_keep_working() -> None:
    configs = [app_config("demo", "http://127.0.0.1:9/hook", new_secret())]
    async with run_broker(configs, max_connections=5, header_timeout=30) as broker:
        held = [await _open(broker) for _ in range(5)]
        await asyncio.sleep(0.1)
        reader, writer = await _open(broker)
        status, problem, _ = await _answer(reader)
        assert (status, problem["code"]) == (503, "too_many_connections")
        await _close(writer)
        for _, held_writer in held:
            await _close(held_writer)
        await asyncio.sleep(0.2)
        reader, writer = await _open(broker)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), scaled(5))
        assert answer.startswith(b"HTTP/1.1 200")
        await _close(writer)


async def test_ordinary_requests_and_keep_alive_are_unaffected(guarded: BrokerHandle) -> None:
    reader, writer = await _open(guarded)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.3)  # the gaps add up to more than the header timeout
    await _close(writer)

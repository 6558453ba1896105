"""SocketWriter: write at once when the socket can take it, else backlog in order."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.waiting import settle, until
from tunnel_broker.tunnels.writer import Message, SocketWriter, send_message


class FakeSocket:
    """An ASGI ``send`` that completes at once while ``writable`` is set, suspends
    (writing nothing) while it is clear, and raises once the socket is ``gone``."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = False
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ConnectionResetError("socket gone")
        if not self.writable.is_set():
            await self.writable.wait()
            if self.gone:
                raise ConnectionResetError("socket gone")
        self.sent.append(message)


def text(payload: str) -> Message:
    return {"type": "websocket.send", "text": payload}


def close_frame(code: int, reason: str) -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


def test_send_message_is_text_for_str_and_bytes_for_bytes() -> None:
    assert send_message("hi") == {"type": "websocket.send", "text": "hi"}
    assert send_message(b"\x00\xff") == {"type": "websocket.send", "bytes": b"\x00\xff"}


async def test_writable_socket_gets_each_message_synchronously() -> None:
    socket = FakeSocket()
    writer = SocketWriter(socket.send)
    assert writer.write(text("a"))
    assert socket.sent == [text("a")]
    assert writer.write(text("b"))
    assert socket.sent == [text("a"), text("b")]
    assert writer.backlog == 0


async def test_suspended_socket_backlogs_without_writing() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    assert writer.write(text("a"))
    assert writer.write(text("b"))
    assert socket.sent == []
    assert writer.backlog == 2


async def test_backlogged_messages_reach_the_socket_in_order() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    messages = [text(str(n)) for n in range(10)]
    for message in messages:
        assert writer.write(message)
    await settle()
    assert socket.sent == []
    socket.writable.set()
    await until(lambda: writer.backlog == 0)
    assert socket.sent == messages


async def test_messages_written_while_draining_keep_their_place() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    writer.write(text("1"))
    writer.write(text("2"))
    socket.writable.set()
    # The drain has not run yet: a new message must queue behind the backlog, not jump it.
    assert writer.write(text("3"))
    assert socket.sent == []
    await until(lambda: writer.backlog == 0)
    assert socket.sent == [text("1"), text("2"), text("3")]


async def test_writes_go_out_synchronously_again_once_the_backlog_drained() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    writer.write(text("queued"))
    socket.writable.set()
    await until(lambda: writer.backlog == 0)
    assert writer.write(text("direct"))
    assert socket.sent == [text("queued"), text("direct")]
    assert writer.backlog == 0


async def test_write_refuses_when_the_backlog_is_full() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send, max_backlog=3)
    assert [writer.write(text(str(n))) for n in range(5)] == [True, True, True, False, False]
    assert writer.backlog == 3
    socket.writable.set()
    await until(lambda: writer.backlog == 0)
    # The refused messages were not taken: only the first three arrive.
    assert socket.sent == [text("0"), text("1"), text("2")]


async def test_write_returns_false_when_the_socket_is_gone() -> None:
    socket = FakeSocket()
    socket.gone = True
    writer = SocketWriter(socket.send)
    assert not writer.write(text("a"))
    assert writer.backlog == 0
    assert socket.sent == []


async def test_socket_gone_while_backlogged_drops_the_backlog() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    writer.write(text("a"))
    writer.write(text("b"))
    socket.gone = True
    socket.writable.set()
    await until(lambda: writer.backlog == 0)
    assert socket.sent == []
    assert not writer.write(text("c"))


async def test_close_on_a_writable_socket_sends_the_close_frame_at_once() -> None:
    socket = FakeSocket()
    writer = SocketWriter(socket.send)
    writer.write(text("a"))
    writer.close(1000, "bye")
    assert socket.sent == [text("a"), close_frame(1000, "bye")]


@pytest.mark.parametrize("drain_started", [False, True], ids=["drain pending", "drain waiting"])
async def test_close_drops_the_backlog_and_sends_the_close_frame_once_writable(
    drain_started: bool,
) -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    for n in range(3):
        writer.write(text(str(n)))
    if drain_started:
        await settle()  # the drain task now waits inside send() for the first message
    writer.close(1008, "slow_consumer")
    assert writer.backlog == 0
    await settle()
    assert socket.sent == []
    socket.writable.set()
    await until(lambda: bool(socket.sent))
    await settle()
    assert socket.sent == [close_frame(1008, "slow_consumer")]


@pytest.mark.parametrize("drain_started", [False, True], ids=["drain pending", "drain waiting"])
async def test_close_when_writable_again_skips_the_backlog_not_yet_drained(
    drain_started: bool,
) -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    for n in range(3):
        writer.write(text(str(n)))
    if drain_started:
        await settle()
    # Writable again, but the drain task has not sent anything yet: the close frame goes
    # out at once and none of the backlog follows it.
    socket.writable.set()
    writer.close(4409, "replaced")
    assert socket.sent == [close_frame(4409, "replaced")]
    await settle()
    assert socket.sent == [close_frame(4409, "replaced")]


async def test_close_on_a_gone_socket_does_not_raise() -> None:
    socket = FakeSocket()
    socket.gone = True
    writer = SocketWriter(socket.send)
    writer.close(1000, "bye")
    assert socket.sent == []


async def test_close_later_on_a_socket_that_goes_away_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tunnel_broker.tunnels.writer")
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    writer.write(text("a"))
    writer.close(1000, "bye")
    socket.gone = True
    socket.writable.set()
    await until(lambda: "close not sent" in caplog.text)
    assert socket.sent == []


@pytest.mark.parametrize("drain_started", [False, True], ids=["drain pending", "drain waiting"])
async def test_nothing_is_written_after_the_close_frame(drain_started: bool) -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send)
    writer.write(text("queued"))
    if drain_started:
        await settle()
    writer.close(1000, "bye")
    assert not writer.write(text("after close"))
    writer.close(1011, "second close")  # ignored: one close frame only
    socket.writable.set()
    await until(lambda: bool(socket.sent))
    await settle()
    assert socket.sent == [close_frame(1000, "bye")]
    assert writer.backlog == 0


async def test_the_backlog_is_bounded_in_bytes_too() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    writer = SocketWriter(socket.send, max_backlog=1000, max_backlog_bytes=10_000)
    assert writer.write(text("x" * 4000))
    assert writer.write(text("x" * 4000))
    assert not writer.overflowed
    assert not writer.write({"type": "websocket.send", "bytes": b"x" * 4000})
    assert writer.overflowed
    assert writer.backlog == 2
    socket.writable.set()
    await until(lambda: writer.backlog == 0)
    assert [len(m["text"]) for m in socket.sent] == [4000, 4000]


async def test_a_held_writer_queues_until_released_then_sends_in_order() -> None:
    # The tunnel is registered before its handshake completes: pushes that reach it
    # meanwhile must wait for the accept, not go out before it.
    socket = FakeSocket()
    writer = SocketWriter(socket.send)
    writer.hold()
    assert writer.write(text("a")) and writer.write(text("b"))
    assert socket.sent == []
    writer.release()
    await until(lambda: socket.sent == [text("a"), text("b")])
    assert writer.write(text("c"))
    assert socket.sent[-1] == text("c")


async def test_a_writer_closed_while_held_sends_only_the_close_once_released() -> None:
    socket = FakeSocket()
    writer = SocketWriter(socket.send)
    writer.hold()
    writer.write(text("a"))
    writer.close(4409, "replaced")
    assert socket.sent == []
    writer.release()
    await until(lambda: socket.sent == [close_frame(4409, "replaced")])
    assert not writer.write(text("late"))
    await settle()
    assert socket.sent == [close_frame(4409, "replaced")]

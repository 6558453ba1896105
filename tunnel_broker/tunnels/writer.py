"""The send side of one socket: write now if the socket can take it, else queue.

Pushes, replies and closes come from many tasks (a broadcast reaches thousands of sockets
in one loop iteration), and none of them may wait for one slow client. So a write never
blocks: it goes out at once when the transport is writable, which is nearly always, and
otherwise joins a backlog of this socket's own that a task drains in order, bounded in
messages and in bytes. A client that lets its backlog fill up is a slow consumer; the
caller closes it.

How "at once" works: an open socket writes a message's frame to its transport if the
transport is not above its high-water mark (``direct``, ``protocol.py``), and says so.
Before that, and for a close, the server's ASGI ``send`` is stepped once: uvicorn's
sans-I/O protocol suspends only while waiting for the transport to become writable,
before writing anything, so one step writes synchronously in the common case, without a
task per message; if it suspends, nothing was written, and the message is queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from enum import Enum
from typing import Any, Protocol

Message = MutableMapping[str, Any]
ASGISend = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("tunnel_broker.tunnels.writer")

MAX_BACKLOG = 1000
# Bytes as well as messages: a thousand pushes of the largest allowed frame would
# otherwise hold over a hundred megabytes for one slow socket.
MAX_BACKLOG_BYTES = 4 * 1024 * 1024

# The loop keeps only weak references to tasks: closes finishing in the background are
# held here until they are done.
_background: set[asyncio.Task[None]] = set()


def _size(message: Message) -> int:
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes") or b""
    return len(payload)  # characters for text: close enough for a bound


def payload_bytes(message: Message) -> int:
    """The exact size of a message's payload on the wire (UTF-8 for text)."""
    text = message.get("text")
    if text is None:
        return len(message.get("bytes") or b"")
    return len(text) if text.isascii() else len(text.encode())


def send_message(payload: str | bytes) -> Message:
    """The ASGI message of one payload; built once for a push to many sockets."""
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    return {"type": "websocket.send", "bytes": payload}


class DirectSocket(Protocol):
    def write_message(self, message: Message) -> Step:
        """Write now if the socket can take it (``tunnels/protocol.py``)."""


class Step(Enum):
    SENT = "sent"
    FAILED = "failed"  # the socket is gone
    WOULD_BLOCK = "would_block"  # nothing written


def _step(send: ASGISend, message: Message) -> Step:
    coro = send(message)
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return Step.SENT
    except Exception:
        return Step.FAILED
    coro.close()  # type: ignore[attr-defined]
    return Step.WOULD_BLOCK


class SocketWriter:
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_closed",
        "_held",
        "_send",
        "_task",
        "direct",
        "max_backlog",
        "max_backlog_bytes",
        "overflowed",
    )

    def __init__(
        self,
        send: ASGISend,
        max_backlog: int = MAX_BACKLOG,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        self._send = send
        self.max_backlog = max_backlog
        self.max_backlog_bytes = max_backlog_bytes
        self._backlog_bytes = 0
        self._backlog: deque[Message] | None = None
        # Set when a write was refused for a full backlog: the client is a slow consumer.
        self.overflowed = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._held: Message | None = None  # see ``hold``
        # The socket itself, once open: writes skip ASGI (``protocol.py``); the backlog
        # and the close still go through ``send``, which waits for the socket.
        self.direct: DirectSocket | None = None

    def hold(self) -> None:
        """Queue every write until ``release``: the socket's handshake is not complete
        (the tunnel is registered first), and the server takes nothing before it."""
        self._backlog = deque()
        self._held = {}

    def release(self) -> None:
        """The handshake is complete: send what was queued, or the close (only)."""
        held, self._held = self._held, None
        if held:  # closed meanwhile
            self._closed = False
            self.close(held["code"], held["reason"])
        elif self._backlog:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._backlog = None

    @property
    def backlog(self) -> int:
        """Messages waiting for the socket to become writable."""
        return 0 if self._backlog is None else len(self._backlog)

    def write(self, message: Message) -> bool:
        """Send or queue ``message``; False if it was not taken: the socket is gone, or
        its backlog is full (a slow consumer: ``overflowed`` is set), or the writer was
        closed."""
        if self._closed:
            return False
        backlog = self._backlog
        if backlog is not None:
            size = _size(message)
            if (
                len(backlog) >= self.max_backlog
                or self._backlog_bytes + size > self.max_backlog_bytes
            ):
                self.overflowed = True
                return False
            backlog.append(message)
            self._backlog_bytes += size
            return True
        direct = self.direct
        step = direct.write_message(message) if direct is not None else _step(self._send, message)
        if step is Step.WOULD_BLOCK:
            self._backlog = deque([message])
            self._backlog_bytes = _size(message)
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return step is not Step.FAILED

    async def _drain(self) -> None:
        backlog = self._backlog
        try:
            while backlog:
                await self._send(backlog[0])
                self._backlog_bytes -= _size(backlog.popleft())
        except Exception:
            logger.debug("backlog dropped: client disconnected")
        finally:
            if self._backlog is backlog:  # not replaced by a close meanwhile
                self._backlog = None
                self._backlog_bytes = 0
                self._task = None

    def close(self, code: int, reason: str) -> None:
        """Send a close frame, dropping whatever is still backlogged: a closing tunnel's
        client must hear why at once, not after a backlog it is too slow to read. Nothing
        is written after the close frame."""
        if self._closed:
            return
        self._closed = True
        if self._held is not None:
            self._held = {"code": code, "reason": reason}
            self._backlog = deque()
            self._backlog_bytes = 0
            return
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._backlog = None
            self._backlog_bytes = 0
        message: Message = {"type": "websocket.close", "code": code, "reason": reason}
        if _step(self._send, message) is Step.WOULD_BLOCK:
            task = asyncio.get_running_loop().create_task(self._close_later(message))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _close_later(self, message: Message) -> None:
        try:
            await self._send(message)
        except Exception:
            logger.debug("close not sent: client already gone")

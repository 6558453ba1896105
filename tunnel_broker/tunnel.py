"""One open tunnel: its identity, its socket's send side, and its limits.

A tunnel is driven by the task that reads its socket (``connect.py``); everybody else
(pushes, actions, takeover, shutdown) only calls ``deliver`` and ``close`` here, which
never block: a slow client gets a bounded backlog of its own, so one slow socket cannot
stall a broadcast to thousands of others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tunnel_broker.apps import App
from tunnel_broker.closecodes import CloseCode
from tunnel_broker.ratelimit import TokenBucket

Message = MutableMapping[str, Any]
ASGISend = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("tunnel_broker.tunnel")

MAX_BACKLOG = 1000
_background: set[asyncio.Task[None]] = set()


def send_message(payload: str | bytes) -> Message:
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    return {"type": "websocket.send", "bytes": payload}


class Tunnel:
    __slots__ = (
        "app",
        "approved",
        "backlog",
        "bucket",
        "close_code",
        "close_reason",
        "connected_at",
        "fragment",
        "groups",
        "identity",
        "last_activity",
        "meta",
        "on_close",
        "replaced",
        "send",
        "tunnel_id",
        "user_id",
        "writer",
    )

    def __init__(
        self,
        app: App,
        tunnel_id: str,
        user_id: str,
        identity: dict[str, Any],
        meta: dict[str, Any],
        groups: set[str],
        fragment: bytes,
        send: ASGISend,
    ) -> None:
        self.app = app
        self.tunnel_id = tunnel_id
        self.user_id = user_id
        self.identity = identity
        self.meta = meta
        self.groups = groups
        self.fragment = fragment
        self.send = send
        self.connected_at = time.time()
        self.last_activity = time.monotonic()
        limits = app.limits
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self.approved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.replaced = False
        self.on_close: asyncio.Future[None] | None = None
        self.backlog: deque[Message] | None = None
        self.writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Tunnel(app={self.app.id!r}, id={self.tunnel_id!r}, user={self.user_id!r})"

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def deliver(self, payload: str | bytes) -> bool:
        """Queue one payload for the client; False when the tunnel is closing."""
        return self.deliver_message(send_message(payload))

    def deliver_message(self, message: Message) -> bool:
        """``deliver`` for a message built once and shared by many tunnels."""
        if self.close_code is not None:
            return False
        self.last_activity = time.monotonic()
        if self.backlog is not None:
            if len(self.backlog) >= MAX_BACKLOG:
                self.close(CloseCode.POLICY_VIOLATION, "slow_consumer")
                return False
            self.backlog.append(message)
            return True
        return self._send_now_or_queue(message)

    def _send_now_or_queue(self, message: Message) -> bool:
        # uvicorn's sans-I/O WebSocket protocol suspends in send() only while waiting for
        # the transport to become writable, before writing anything. Stepping the
        # coroutine once writes synchronously in the common case, without a task per
        # message; if it suspends, nothing was written and the message moves to a
        # backlog drained by a task of this tunnel's own.
        coro = self.send(message)
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return True
        except Exception:
            return False
        coro.close()  # type: ignore[attr-defined]
        self.backlog = deque([message])
        self.writer = asyncio.get_running_loop().create_task(self._drain_backlog())
        return True

    async def _drain_backlog(self) -> None:
        backlog = self.backlog
        try:
            while backlog:
                await self.send(backlog[0])
                backlog.popleft()
        except Exception:
            logger.debug("backlog of %r dropped: client disconnected", self)
        finally:
            self.backlog = None
            self.writer = None

    async def wait_approved(self) -> None:
        """Wait until the business server acknowledged ``tunnel.connected`` (so it can
        reject the tunnel before any message of it is relayed) or the tunnel closes."""
        if self.approved.done() or self.close_code is not None:
            return
        self.on_close = asyncio.get_running_loop().create_future()
        approved = self.approved
        await asyncio.wait((approved, self.on_close), return_when=asyncio.FIRST_COMPLETED)

    def approve(self) -> None:
        if not self.approved.done():
            self.approved.set_result(None)

    def close(self, code: int, reason: str) -> bool:
        """Close the socket with ``code``; the reading task then reports the close.

        Returns False if the tunnel was already closing (the first close wins, so the
        ``tunnel.closed`` event reports the cause that actually ended the tunnel)."""
        if self.close_code is not None:
            return False
        self.close_code = code
        self.close_reason = reason
        if self.on_close is not None and not self.on_close.done():
            self.on_close.set_result(None)
        message: Message = {"type": "websocket.close", "code": code, "reason": reason}
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None
            self.backlog = None
        coro = self.send(message)
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return True
        except Exception:
            return True
        # Not writable right now: finish the close in the background.
        coro.close()  # type: ignore[attr-defined]
        task = asyncio.get_running_loop().create_task(self._close_later(message))
        # The loop keeps only weak references to tasks: hold this one until it is done.
        _background.add(task)
        task.add_done_callback(_background.discard)
        return True

    async def _close_later(self, message: Message) -> None:
        try:
            await self.send(message)
        except Exception:
            logger.debug("close of %r: client already gone", self)

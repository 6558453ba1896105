"""One open tunnel: who it is, whether the business server approved it, how it ends.

A tunnel is driven by the task that reads its socket (``connect.py``); everybody else
(pushes, actions, takeover, shutdown) only calls ``push`` and ``close`` here, which never
block: writes go through the socket's ``SocketWriter``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from tunnel_broker.apps import App
from tunnel_broker.ratelimit import TokenBucket
from tunnel_broker.tunnels.closecodes import ABUSE_REASONS, CloseCode
from tunnel_broker.tunnels.resume import ResumeState
from tunnel_broker.tunnels.writer import ASGISend, Message, SocketWriter, send_message
from tunnel_broker.webhooks.batching import new_epoch


class Tunnel:
    __slots__ = (
        "app",
        "approved",
        "bucket",
        "close_code",
        "close_reason",
        "connected_at",
        "ended",
        "epoch",
        "fragment",
        "groups",
        "held",
        "identity",
        "last_activity",
        "meta",
        "on_close",
        "on_end",
        "parked",
        "predecessor",
        "reliable",
        "replaced",
        "resume_after",
        "resumed",
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
        resume_after: int | None = None,
    ) -> None:
        self.app = app
        self.tunnel_id = tunnel_id
        self.user_id = user_id
        self.identity = identity
        self.meta = meta
        self.groups = groups
        self.fragment = fragment
        self.writer = SocketWriter(send)
        # This socket's events, as event delivery counts and orders them (batching.py).
        self.epoch = new_epoch()
        self.connected_at = time.time()
        self.last_activity = time.monotonic()
        limits = app.limits
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self.approved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        # Set while the broker deliberately does not read this socket (waiting for the
        # business server): the tunnel is not idle, whatever its last activity says.
        self.held = False
        # Set when this socket's tunnel.closed is not ours to report: a newer socket took
        # the tunnel over, or another pod already reported it.
        self.replaced = False
        self.on_close: asyncio.Future[None] | None = None
        # The socket this one took over on this pod, while it is still being read to its
        # end; and this socket's own end, for a successor waiting on it.
        self.predecessor: Tunnel | None = None
        self.ended = False
        self.on_end: asyncio.Future[None] | None = None
        # The reliable protocol (``reliable_tunnel.py``): the tunnel's sequences (None:
        # raw frames); where the client's last socket left off (None: a new client);
        # whether this socket continues them; ``parked``: the socket dropped, the tunnel
        # waits for a resume.
        self.reliable: ResumeState | None = None
        self.resume_after = resume_after
        self.resumed = False
        self.parked = False

    def __repr__(self) -> str:
        return f"Tunnel(app={self.app.id!r}, id={self.tunnel_id!r}, user={self.user_id!r})"

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    @property
    def relays(self) -> bool:
        """Whether a message read now reaches the business server: always while open;
        after a close, unless the business server rejected the tunnel or the close was
        for abuse (``closecodes.ABUSE_REASONS``)."""
        code = self.close_code
        if code is None:
            return True
        return code != CloseCode.REJECTED and self.close_reason not in ABUSE_REASONS

    def push(self, payload: str | bytes) -> bool:
        """Send one payload to the client; False when the tunnel is closing."""
        return self.push_message(send_message(payload))

    def push_message(self, message: Message) -> bool:
        """``push`` for a message built once and shared by many tunnels."""
        if self.close_code is not None:
            return False
        self.last_activity = time.monotonic()
        return self._write(message)

    def _write(self, message: Message) -> bool:
        writer = self.writer
        if writer.write(message):
            return True
        if writer.overflowed:
            self.close(CloseCode.POLICY_VIOLATION, "slow_consumer")
        return False

    def welcome(self, window_seconds: float) -> None:
        """What the socket says first (the reliable protocol's welcome; raw: nothing)."""

    def park(self) -> None:
        """The socket dropped: keep pushes for a resume, write none."""
        self.parked = True

    def expire(self, code: int, reason: str) -> None:
        """The resume window passed: the tunnel ends, with nothing to write."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason

    async def wait_approved(self) -> None:
        """Wait until the business server acknowledged ``tunnel.connected`` (so it can
        reject the tunnel before any message of it is relayed) or the tunnel closes."""
        if not self.approved.done():
            await self.unless_closed(self.approved)

    async def unless_closed(self, waiting: Awaitable[Any]) -> None:
        """Wait for ``waiting``, or until the tunnel closes if that comes first."""
        if self.close_code is not None:
            return
        if self.on_close is None:
            self.on_close = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((task, self.on_close), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # A coroutine's task is ours to stop; a future (the shared approval) is not.
            if task is not waiting and not task.done():
                task.cancel()

    def approve(self) -> None:
        if not self.approved.done():
            self.approved.set_result(None)

    def take_over(self, old: Tunnel) -> None:
        """Become the tunnel ``old`` was: its groups, its approval (or the wait for it),
        and its place; ``old`` closes with 4409 and reports nothing."""
        self.groups |= old.groups
        if old.approved.done():
            self.approve()
        else:
            self.approved = old.approved
        if not old.ended:
            self.predecessor = old
        old.close_replaced(CloseCode.REPLACED, "replaced")

    async def wait_for_predecessor(self) -> None:
        """Wait until the socket this one took over has been read to its end: what its
        client sent before the takeover reaches the business server first. (Bounded: a
        closing socket is read regardless of back-pressure, until the client answers the
        close frame or the close deadline passes.) A resumed socket of the reliable
        protocol does not wait: its client sends again whatever the old socket did not
        deliver, each message is accepted once by number whichever socket reads it first,
        and the old one may take a close timeout to end when its connection was cut."""
        old = self.predecessor
        if old is not None and not old.ended and not self.resumed:
            if old.on_end is None:
                old.on_end = asyncio.get_running_loop().create_future()
            await old.on_end
        self.predecessor = None

    def end(self) -> None:
        """Nothing more is read from this socket."""
        self.ended = True
        if self.on_end is not None and not self.on_end.done():
            self.on_end.set_result(None)

    def close_replaced(self, code: int, reason: str) -> bool:
        """Close a socket whose ``tunnel.closed`` is not ours to report (a newer socket
        holds the tunnel, or another pod reported it closed)."""
        self.replaced = True
        return self.close(code, reason)

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
        self.writer.close(code, reason)
        return True

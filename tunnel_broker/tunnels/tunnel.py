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
from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.closecodes import ABUSE_REASONS, CloseCode
from tunnel_broker.tunnels.resume import Accept, ResumeState, SharedSequences
from tunnel_broker.tunnels.writer import ASGISend, Message, SocketWriter, send_message
from tunnel_broker.webhooks.batching import new_epoch

CONTROL_FRAMES_PER_SECOND = 100.0
CONTROL_BURST = 200


class Tunnel:
    __slots__ = (
        "_ack_due",
        "app",
        "approved",
        "bucket",
        "close_code",
        "close_reason",
        "connected_at",
        "control_bucket",
        "ended",
        "epoch",
        "fragment",
        "groups",
        "held",
        "identity",
        "last_activity",
        "live",
        "meta",
        "on_close",
        "on_end",
        "parked",
        "pending",
        "predecessor",
        "reliable",
        "replaced",
        "resume_after",
        "resumed",
        "shared",
        "tunnel_id",
        "user_id",
        "writer",
        "written",
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
        numbered: bool = False,
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
        # The reliable protocol (``reliable.py``): the tunnel's sequences, which a
        # resuming socket takes over; where the client's last socket left off (None: a
        # new client); whether pushes are written (the socket is open and welcomed) or
        # only kept; and ``parked``: the socket dropped, the tunnel waits for a resume.
        self.reliable = (
            ResumeState(limits.resume_buffer_messages, limits.resume_buffer_bytes)
            if numbered
            else None
        )
        # Acknowledgements and heartbeats are not the client's messages (acks grow with
        # the pushes it gets): a bucket of their own, generous, against floods only.
        self.control_bucket = (
            TokenBucket(CONTROL_FRAMES_PER_SECOND + limits.messages_per_second, CONTROL_BURST)
            if numbered
            else None
        )
        self.resume_after = resume_after
        self.resumed = False
        self.live = not numbered
        self.parked = False
        self._ack_due = False
        # Redis mode: the sequences live in Redis (``shared``); pushes arrive numbered,
        # perhaps out of order (``pending`` until their turn), and ``written`` is the last
        # one written to the socket.
        self.shared: SharedSequences | None = None
        self.pending: dict[int, str | bytes] = {}
        self.written = 0

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
        state = self.reliable
        if state is None:
            return self._write(message)
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        if self.shared is not None:
            return self.shared.push(self, payload)
        seq = state.record(payload)
        if seq is None:
            self.close(CloseCode.RESUME_BUFFER_FULL, "resume_buffer_full")
            return False
        if self.live:
            self._write(send_message(reliable.data_frame(seq, payload)))
        return True  # kept until acknowledged: a resumed socket gets it again

    def _write(self, message: Message) -> bool:
        writer = self.writer
        if writer.write(message):
            return True
        if writer.overflowed:
            self.close(CloseCode.POLICY_VIOLATION, "slow_consumer")
        return False

    # ---- the reliable protocol -----------------------------------------------------------

    def push_numbered(self, seq: int, payload: str | bytes) -> bool:
        """A push numbered elsewhere (``shared``): written in number order, once; a gap
        is fetched (a push numbered by another pod may come later, or never here)."""
        if self.close_code is not None:
            return False
        if seq <= self.written:
            return True  # had it
        state = self.reliable
        if state is not None and seq > state.sent:
            state.sent = seq
        self.pending[seq] = payload
        if self.live:
            self._write_pending()
        return True

    def _write_pending(self) -> None:
        pending = self.pending
        while self.written + 1 in pending:
            self.written += 1
            frame = reliable.data_frame(self.written, pending.pop(self.written))
            self._write(send_message(frame))
        if pending and self.shared is not None:
            self.shared.refill(self, self.written, min(pending) - 1)

    def welcome(self, window_seconds: float) -> None:
        """The socket is open (its writer still held): the welcome, then every push the
        client has not received, before anything pushed from now on."""
        state = self.reliable
        if state is None:
            return
        if self.shared is not None:  # the pushes are in ``pending`` (``push_numbered``)
            welcome = reliable.welcome_frame(
                self.tunnel_id, self.resumed, state.accepted, window_seconds
            )
            self._write(send_message(welcome))
            self.live = True
            self._write_pending()
            return
        after = self.resume_after if self.resumed and self.resume_after is not None else 0
        welcome = reliable.welcome_frame(
            self.tunnel_id, self.resumed, state.accepted, window_seconds
        )
        self._write(send_message(welcome))
        for seq, payload in state.missed(after):
            self._write(send_message(reliable.data_frame(seq, payload)))
        self.live = True

    def receive_numbered(self, frame: str | bytes) -> str | bytes | None:
        """What a client's frame relays (None: nothing): a new message's payload; acks
        and heartbeats are handled here, a message seen before is dropped (and
        acknowledged again), and a broken frame closes the socket."""
        state = self.reliable
        assert state is not None
        try:
            parsed = reliable.parse(frame)
        except reliable.FrameError:
            self.close(CloseCode.PROTOCOL_ERROR, "invalid_frame")
            return None
        kind = parsed.kind
        # A new message is charged as any client message; one sent again after a resume
        # (a duplicate) and the protocol's own frames come out of the control budget.
        new = kind == reliable.DATA and parsed.seq == state.accepted + 1
        bucket = self.bucket if new else self.control_bucket
        if bucket is not None and not bucket.take(self.last_activity):  # read just now
            self.close(CloseCode.POLICY_VIOLATION, "rate_limited")
            return None
        if kind == reliable.DATA:
            verdict = state.accept(parsed.seq)
            if verdict is Accept.GAP:
                self.close(CloseCode.PROTOCOL_ERROR, "sequence_gap")
                return None
            if verdict is Accept.NEW and self.shared is not None:
                self.shared.accepted(self, parsed.seq)
            self._acknowledge_soon()
            return parsed.payload if verdict is Accept.NEW else None
        if kind == reliable.ACK:
            if not state.acknowledge(parsed.seq):
                self.close(CloseCode.PROTOCOL_ERROR, "ack_beyond_sent")
            elif self.shared is not None:
                self.shared.acknowledged(self, parsed.seq)
        else:
            self._write(send_message(reliable.HEARTBEAT_FRAME))
        return None

    def _acknowledge_soon(self) -> None:
        """One ack for everything read in this turn of the loop, sent after the reading
        loop queued it (accepted: it reaches the business server, or the socket stops
        being read)."""
        if not self._ack_due:
            self._ack_due = True
            asyncio.get_running_loop().call_soon(self._acknowledge)

    def _acknowledge(self) -> None:
        self._ack_due = False
        state = self.reliable
        if state is not None and self.live and self.close_code is None:
            self._write(send_message(reliable.ack_frame(state.accepted)))

    def park(self) -> None:
        """The socket dropped: keep pushes for a resume, write none."""
        self.live = False
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
        # The same client back (it says where it left off): the same sequences.
        if self.reliable is not None and old.reliable is not None and self.resume_after is not None:
            self.reliable = old.reliable
            self.resumed = True
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

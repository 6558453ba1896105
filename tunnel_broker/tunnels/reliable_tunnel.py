"""A tunnel whose client speaks the reliable protocol (``reliable.py``): numbered pushes
kept until acknowledged, numbered client messages accepted once, a welcome first, and the
sequences a resuming socket takes over (docs/api.md, "The reliable protocol").

In memory mode the tunnel numbers its pushes itself; in Redis mode Redis does
(``shared``, ``backend/redis/resumes.py``) and the tunnel writes what it is given in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tunnel_broker.apps import App
from tunnel_broker.ratelimit import TokenBucket
from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.resume import Accept, ResumeState
from tunnel_broker.tunnels.shared import SharedSequences
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.tunnels.writer import ASGISend, Message, send_message
from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.events import EncodedEvent

# Acknowledgements and heartbeats are not the client's messages (acks grow with the
# pushes it gets): a budget of their own, generous, against floods only.
CONTROL_FRAMES_PER_SECOND = 100.0
CONTROL_BURST = 200


class ReliableTunnel(Tunnel):
    __slots__ = ("_ack_due", "control_bucket", "live", "pending", "sequences", "shared", "written")

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
        super().__init__(
            app, tunnel_id, user_id, identity, meta, groups, fragment, send, resume_after
        )
        limits = app.limits
        self.sequences = ResumeState(limits.resume_buffer_messages, limits.resume_buffer_bytes)
        self.reliable = self.sequences
        self.control_bucket = TokenBucket(
            CONTROL_FRAMES_PER_SECOND + limits.messages_per_second, CONTROL_BURST
        )
        self.live = False  # pushes are written once the socket is open and welcomed
        self._ack_due = False
        # Redis mode: the sequences live in Redis (``shared``); pushes arrive numbered,
        # perhaps out of order (``pending`` until their turn), and ``written`` is the last
        # one written to the socket.
        self.shared: SharedSequences | None = None
        self.pending: dict[int, str | bytes] = {}
        self.written = 0

    def push_message(self, message: Message) -> bool:
        if self.close_code is not None:
            return False
        self.last_activity = time.monotonic()
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        if self.shared is not None:
            return self.shared.push(self, payload)
        seq = self.sequences.record(payload)
        if seq is None:
            self.close(CloseCode.RESUME_BUFFER_FULL, "resume_buffer_full")
            return False
        if self.live:
            self._write(send_message(reliable.data_frame(seq, payload)))
        return True  # kept until acknowledged: a resumed socket gets it again

    def take_over(self, old: Tunnel) -> None:
        # The same client back (it says where it left off): the same sequences.
        if isinstance(old, ReliableTunnel) and self.resume_after is not None:
            self.sequences = self.reliable = old.sequences
            self.resumed = True
            # Numbered pushes that reached the old socket while this one registered
            # (Redis numbered them after the takeover's count): this one writes them.
            for seq, payload in old.pending.items():
                self.pending.setdefault(seq, payload)
        super().take_over(old)

    def park(self) -> None:
        self.live = False
        super().park()

    def push_numbered(self, seq: int, payload: str | bytes) -> bool:
        """A push numbered elsewhere (``shared``): written in number order, once; a gap
        is fetched (a push numbered by another pod may come later, or never here)."""
        if self.close_code is not None:
            return False
        if seq <= self.written:
            return True  # had it
        state = self.sequences
        if seq > state.sent:
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
        state = self.sequences
        welcome = reliable.welcome_frame(
            self.tunnel_id, self.resumed, state.accepted, window_seconds
        )
        self._write(send_message(welcome))
        self.live = True
        if self.shared is not None:  # the pushes are in ``pending`` (``push_numbered``)
            self._write_pending()
            return
        after = self.resume_after if self.resumed and self.resume_after is not None else 0
        for seq, payload in state.missed(after):
            self._write(send_message(reliable.data_frame(seq, payload)))

    def receive_numbered(self, frame: str | bytes) -> str | bytes | None:
        """What a client's frame relays (None: nothing): a new message's payload; acks
        and heartbeats are handled here, a message seen before is dropped (and
        acknowledged again), and a broken frame closes the socket."""
        state = self.sequences
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
        if not bucket.take(self.last_activity):  # the reading loop read it just now
            self.close(CloseCode.POLICY_VIOLATION, "rate_limited")
            return None
        if kind == reliable.DATA:
            verdict = state.accept(parsed.seq)
            if verdict is Accept.GAP:
                self.close(CloseCode.PROTOCOL_ERROR, "sequence_gap")
                return None
            # Memory: accepted once queued (the process is all there is). Redis: once the
            # business server has it and Redis knows (``durably_accepted``), so that a
            # resume on any pod after this one died knows it too.
            if self.shared is None or verdict is Accept.DUPLICATE:
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
        state = self.sequences
        if self.live and self.close_code is None:
            told = state.accepted if self.shared is None else state.durable
            self._write(send_message(reliable.ack_frame(told)))

    def numbered_event(
        self, payload: str | bytes
    ) -> tuple[EncodedEvent, Callable[[], None] | None]:
        """The ``tunnel.message`` of the message just accepted, with an id its number
        decides, and (Redis mode) what to do once the business server has it."""
        state = self.sequences
        seq = state.accepted
        event_id = events.numbered_id(self.tunnel_id, state.sequences, seq)
        event = events.message(self.fragment, self.tunnel_id, payload, event_id)
        shared = self.shared
        if shared is None:
            return event, None
        return event, lambda: shared.accepted(self, seq)

    def durably_accepted(self, seq: int) -> None:
        """Redis mode: the business server has the client's messages up to ``seq`` and
        Redis knows it: tell the client."""
        state = self.sequences
        if seq > state.durable:
            state.durable = seq
            self._acknowledge_soon()

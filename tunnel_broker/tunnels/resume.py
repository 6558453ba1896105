"""A reliable tunnel's sequences: what it pushed and the client has not acknowledged,
and the last client message accepted. Free of I/O; it outlives the socket (a resumed
socket takes it over) and is bounded by the app's ``resume_buffer_messages`` and
``resume_buffer_bytes``.
"""

from __future__ import annotations

import os
from collections import deque
from enum import Enum


class Accept(Enum):
    NEW = "new"  # the next message: relay it
    DUPLICATE = "duplicate"  # accepted before (sent again after a resume): drop it
    GAP = "gap"  # a message is missing before it: a broken client


class ResumeState:
    __slots__ = (
        "accepted",
        "durable",
        "max_bytes",
        "max_messages",
        "sent",
        "sequences",
        "unacked",
        "unacked_bytes",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        # Names these sequences (new ones when a client starts afresh): message event ids
        # derive from it (``events.numbered_id``).
        self.sequences = os.urandom(8).hex()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.sent = 0  # sequence number of the last push
        # The pushes not acknowledged, oldest first: numbers ``sent - len + 1`` to
        # ``sent``. Payloads only, no (number, payload) pair each: one object less per
        # push kept, on the broadcast path (docs/performance.md).
        self.unacked: deque[str | bytes] = deque()
        self.unacked_bytes = 0
        self.accepted = 0  # sequence number of the last client message relayed
        # Redis mode: the last one the business server has and Redis knows of, which is
        # what the client is told (``a`` frames); in memory mode ``accepted`` is.
        self.durable = 0

    def record(self, payload: str | bytes) -> int | None:
        """Number a push and keep it until acknowledged; None when the buffer is full
        (the client does not acknowledge, or stays away while pushes pile up)."""
        size = len(payload)
        if len(self.unacked) >= self.max_messages or self.unacked_bytes + size > self.max_bytes:
            return None
        self.sent += 1
        self.unacked.append(payload)
        self.unacked_bytes += size
        return self.sent

    def acknowledge(self, seq: int) -> bool:
        """The client has every push up to ``seq``; False if it claims one never sent."""
        if seq > self.sent:
            return False
        unacked = self.unacked
        for _ in range(seq - (self.sent - len(unacked))):
            self.unacked_bytes -= len(unacked.popleft())
        return True

    def missed(self, after: int) -> list[tuple[int, str | bytes]]:
        """The pushes after ``after`` (the last one the client received), in order."""
        self.acknowledge(min(after, self.sent))
        first = self.sent - len(self.unacked) + 1
        return list(enumerate(self.unacked, start=first))

    def accept(self, seq: int) -> Accept:
        if seq == self.accepted + 1:
            self.accepted = seq
            return Accept.NEW
        return Accept.DUPLICATE if seq <= self.accepted else Accept.GAP

"""A client of the reliable protocol (``tb.reliable.v1``) in Python, written from
docs/api.md alone (it shares no code with the broker's codec): what the tests drive, and
what a client in another language looks like.

It keeps what it received in order (``received``), counts anything received twice or
out of order, acknowledges pushes, numbers its messages and keeps them until the broker
acknowledges them, and on ``connect`` after a drop resumes: it says where it left off
(``resume``), and sends again what the broker had not accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

SUBPROTOCOL = "tb.reliable.v1"


class ReliableClient:
    def __init__(self, connect_url: str, ack_every: int = 10, ack_after: float = 0.02) -> None:
        self.connect_url = connect_url
        self.ack_every = ack_every
        self.ack_after = ack_after
        self.received: list[str | bytes] = []
        self.last = 0  # sequence number of the last push received
        self.acked = 0  # the last one acknowledged to the broker
        self.duplicates = 0
        self.gaps = 0
        self.next_seq = 1
        self.unacked: dict[int, str | bytes] = {}  # sent, not yet accepted by the broker
        self.welcomes: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.ws: ClientConnection | None = None
        self.closed: ConnectionClosed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.changed = asyncio.Event()

    async def connect(self, url: str | None = None, resume: bool = True) -> dict[str, Any]:
        """Open a socket (to ``url``: the same connect URL, perhaps through another
        route) and read its welcome; resumes when this client was connected before."""
        target = url or self.connect_url
        if resume and self.welcomes:
            target += f"&resume={self.last}"
        ws = await connect(target, subprotocols=[SUBPROTOCOL], open_timeout=10, close_timeout=2)  # type: ignore[list-item]
        assert ws.subprotocol == SUBPROTOCOL, ws.subprotocol
        first = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(first, str) and first.startswith("w:"), first
        welcome: dict[str, Any] = json.loads(first[2:])
        self.welcomes.append(welcome)
        if not welcome["resumed"]:
            self.last = self.acked = 0
        # What the broker accepted needs no sending again; the rest goes again, in order.
        for seq in [s for s in self.unacked if s <= welcome["accepted"]]:
            del self.unacked[seq]
        self.ws, self.closed = ws, None
        for seq in sorted(self.unacked):
            await ws.send(_frame(seq, self.unacked[seq]))
        self._reader = asyncio.create_task(self._read(ws))
        return welcome

    async def send(self, payload: str | bytes) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.unacked[seq] = payload
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(_frame(seq, payload))
        return seq

    async def heartbeat(self) -> None:
        assert self.ws is not None
        await self.ws.send("h:")

    def drop(self) -> None:
        """Lose the connection: no close handshake, nothing more read or sent on it."""
        if self.ws is not None:
            self.ws.transport.abort()
        self._forget_socket()

    def abandon(self) -> None:
        """Stop using the socket without touching it (its TCP connection is cut
        elsewhere, say): as a phone whose network vanished."""
        self._forget_socket()

    def _forget_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self._forget_socket()

    async def wait_for(self, condition: Any, seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self._on_frame(ws, frame)
                self.changed.set()
        except ConnectionClosed as closed:
            self.closed = closed
        self.closed = self.closed or ConnectionClosed(ws.close_rcvd, ws.close_sent)
        self.changed.set()

    def _on_frame(self, ws: ClientConnection, frame: str | bytes) -> None:
        head = frame[:18]
        colon = head.index(":" if isinstance(head, str) else b":")
        kind = chr(frame[0]) if isinstance(frame, bytes) else frame[0]
        number = frame[1:colon]
        if kind == "m":
            seq = int(number)
            if seq <= self.last:
                self.duplicates += 1
            elif seq != self.last + 1:
                self.gaps += 1
            else:
                self.last = seq
                self.received.append(frame[colon + 1 :])
                self._ack_soon(ws)
        elif kind == "a":
            for seq in [s for s in self.unacked if s <= int(number)]:
                del self.unacked[seq]
        elif kind == "h":
            self.heartbeats += 1
        else:
            raise AssertionError(f"unexpected frame {frame[:40]!r}")

    def _ack_soon(self, ws: ClientConnection) -> None:
        if self.last - self.acked >= self.ack_every:
            self._ack(ws)
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(self.ack_after, self._ack, ws)

    def _ack(self, ws: ClientConnection) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if ws is self.ws and self.last > self.acked:
            self.acked = self.last
            task = asyncio.ensure_future(ws.send(f"a{self.last}:"))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _frame(seq: int, payload: str | bytes) -> str | bytes:
    if isinstance(payload, str):
        return f"m{seq}:{payload}"
    return f"m{seq}:".encode() + payload

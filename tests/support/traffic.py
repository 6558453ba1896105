"""Steady client traffic for fault tests, and the ledger that says what was lost.

Each ``SteadyClient`` holds one tunnel and sends numbered text messages ("1", "2", ...)
at a fixed rate, the way a mini-program reports a counter. A number counts as sent once
``send`` returned on an open socket. When its socket ends the client reconnects (to the
next pod, like a load balancer might send it) with the same connect URL, retrying refusals
with a short backoff, and sends the numbers it has not sent yet. Like ``wx.connectSocket``
it sends no protocol pings of its own.

``Ledger.check`` then compares what each client sent with what the webhook receiver got:
lost, duplicated and out-of-order numbers, and whether every tunnel's lifecycle events
pair up (connected, closed, connected, closed...).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

# Close codes a healthy run under back-pressure must never show.
PUNISHING = {1008: "rate or policy", 1011: "keepalive or internal error"}


@dataclass
class SteadyClient:
    tunnel_id: str
    urls: list[str]  # the connect URL on each pod
    pod: int
    rate: float = 5.0
    sent: list[int] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    sockets: int = 0
    ws: ClientConnection | None = None
    _old: set[asyncio.Task[None]] = field(default_factory=set)
    _moving: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _open(self, pod: int, deadline: float) -> ClientConnection:
        """Connect to ``pod``, retrying refusals (1013 overloaded, 1012 restarting)."""
        while True:
            try:
                ws = await connect(self.urls[pod], ping_interval=None, open_timeout=20)
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
                continue
            # A refusal is an accepted socket closed at once: look before sending.
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                self.sockets += 1
                return ws
            except ConnectionClosed as exc:
                frame = exc.rcvd
                self.refusals.append((frame.code, frame.reason) if frame else (1006, ""))
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.tunnel_id}: refused until the deadline")
            await asyncio.sleep(0.5)

    async def _watch(self, ws: ClientConnection) -> None:
        """Read (and drop) pushes until the socket closes; record how it closed."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
        frame = ws.protocol.close_rcvd
        self.closes.append((frame.code, frame.reason) if frame else (1006, ""))

    async def move_to(self, pod: int) -> None:
        """Open a second socket to ``pod`` (a takeover) and send from it from now on;
        the old one is left to the broker to close (4409)."""
        async with self._moving:
            await self._move(pod)

    async def _move(self, pod: int) -> None:
        ws = await self._open(pod, time.monotonic() + 120)
        self.pod = pod
        self.ws = ws
        task = asyncio.get_running_loop().create_task(self._watch(ws))
        self._old.add(task)
        task.add_done_callback(self._old.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, reconnecting whenever the socket ends."""
        await self.move_to(self.pod)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            ws = self.ws
            assert ws is not None
            number = len(self.sent) + 1
            try:
                await ws.send(str(number))
            except ConnectionClosed:
                async with self._moving:
                    if self.ws is ws:  # ended under us, not moved: reconnect elsewhere
                        await self._move((self.pod + 1) % len(self.urls))
                continue
            self.sent.append(number)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def finish(self) -> None:
        """Close normally and wait until the broker has seen it."""
        if self.ws is not None:
            await self.ws.close()
        if self._old:
            await asyncio.wait(list(self._old), timeout=30)


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    punished: list[tuple[str, int, str]] = field(default_factory=list)
    unpaired: list[tuple[str, list[str]]] = field(default_factory=list)
    sent: int = 0
    delivered: int = 0

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.out_of_order or self.punished or self.unpaired
        )


def check(clients: list[SteadyClient], events: list[dict[str, Any]]) -> Verdict:
    """What the receiver's ``events`` say about each client's traffic."""
    verdict = Verdict()
    by_tunnel: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_tunnel.setdefault(event["tunnel_id"], []).append(event)
    for client in clients:
        mine = by_tunnel.get(client.tunnel_id, [])
        numbers = [int(e["data"]) for e in mine if e["type"] == "tunnel.message"]
        verdict.sent += len(client.sent)
        verdict.delivered += len(numbers)
        counts = Counter(numbers)
        verdict.lost += sum(1 for n in client.sent if n not in counts)
        verdict.duplicated += sum(c - 1 for c in counts.values() if c > 1)
        verdict.out_of_order += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
        for code, reason in client.closes + client.refusals:
            if code in PUNISHING:
                verdict.punished.append((client.tunnel_id, code, reason))
        lifecycle = [e["type"] for e in mine if e["type"] != "tunnel.message"]
        expected = ["tunnel.connected", "tunnel.closed"] * (len(lifecycle) // 2)
        if not lifecycle or lifecycle != expected:
            verdict.unpaired.append((client.tunnel_id, lifecycle))
    return verdict

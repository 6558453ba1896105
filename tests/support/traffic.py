"""Steady client traffic for fault tests, and the ledger that says what was lost.

Each ``SteadyClient`` holds one tunnel and sends numbered text messages ("1", "2", ...)
at a fixed rate, the way a mini-program reports a counter. A number counts as sent once
``send`` returned on an open socket; the client keeps when and on which socket. When its
socket ends the client reconnects with the same connect URL, to the next pod (like a load
balancer that stops sending it to a pod that refuses), retrying with a short backoff, and
sends the numbers it has not sent yet. Like ``wx.connectSocket`` it sends no protocol
pings of its own. It records every text message it receives (the pushes ``p<n>``).

``check`` then compares what each client sent with what the webhook receiver got: lost,
duplicated and out-of-order numbers, whether every tunnel's lifecycle events pair up
(connected, closed, connected, closed...), and, given the pushes the API accepted, which
of them did not reach their clients.

A raw WebSocket client cannot know which frames a dying pod had read, so a lost number is
split: *in flight at the fault* when it went out on a socket that then broke without a
close frame (1006) right after, or on a socket to a pod already killed; *otherwise* when
nothing excuses it (a real loss: the target is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# Close codes a healthy run under back-pressure must never show.
PUNISHING = {1008: "rate or policy", 1011: "keepalive or internal error"}
NO_CLOSE_FRAME = 1006


@dataclass
class Socket:
    """One socket a client opened: to which pod, when, and how it ended."""

    pod: int
    opened_at: float
    ended_at: float | None = None
    close: tuple[int, str] | None = None

    def open_during(self, start: float, end: float) -> bool:
        return self.opened_at <= start and (self.ended_at is None or self.ended_at >= end)


@dataclass
class SteadyClient:
    tunnel_id: str
    urls: list[str]  # the connect URL on each pod
    pod: int
    rate: float = 5.0
    user_id: str = ""
    sent: list[int] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # monotonic time of each send
    sent_on: list[int] = field(default_factory=list)  # index in ``history``
    history: list[Socket] = field(default_factory=list)
    received: list[tuple[str, float, int]] = field(default_factory=list)  # text, when, socket
    closes: list[tuple[int, str]] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    sockets: int = 0
    ws: ClientConnection | None = None
    _old: set[asyncio.Task[None]] = field(default_factory=set)
    _moving: asyncio.Lock = field(default_factory=asyncio.Lock)
    _index: int = 0  # ``history`` index of ``ws``

    async def _open(self, pod: int, deadline: float, rotate: bool = False) -> ClientConnection:
        """Connect to ``pod`` (to the next one after each failure if ``rotate``),
        retrying refusals (1013 overloaded, 1012 restarting) and dead pods."""
        while True:
            try:
                ws = await connect(self.urls[pod], ping_interval=None, open_timeout=20)
            except (OSError, InvalidHandshake, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                pod = (pod + 1) % len(self.urls) if rotate else pod
                await asyncio.sleep(0.5)
                continue
            # A refusal is an accepted socket closed at once: look before sending. What
            # arrives instead is a push, the first message of this socket.
            first: str | bytes | None = None
            try:
                first = await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                pass
            except ConnectionClosed as exc:
                frame = exc.rcvd
                self.refusals.append((frame.code, frame.reason) if frame else (1006, ""))
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.tunnel_id}: refused until the deadline") from exc
                pod = (pod + 1) % len(self.urls) if rotate else pod
                await asyncio.sleep(0.5)
                continue
            self.sockets += 1
            self.pod = pod
            self.history.append(Socket(pod, time.monotonic()))
            if isinstance(first, str):
                self.received.append((first, time.monotonic(), len(self.history) - 1))
            return ws

    async def _watch(self, ws: ClientConnection, index: int) -> None:
        """Record what arrives until the socket closes; record how it closed."""
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    self.received.append((message, time.monotonic(), index))
        frame = ws.protocol.close_rcvd
        close = (frame.code, frame.reason) if frame else (NO_CLOSE_FRAME, "")
        self.closes.append(close)
        sock = self.history[index]
        if sock.ended_at is None:  # else ``drop`` ended it
            sock.ended_at = time.monotonic()
            sock.close = close

    def drop(self) -> None:
        """Reset the connection, as a network failure would (no close frame). The socket
        ends now, though the client notices a little later (and may write into it
        meanwhile, as a real client would)."""
        if self.ws is None:
            return
        sock = self.history[self._index]
        if sock.ended_at is None:
            sock.ended_at = time.monotonic()
            sock.close = (NO_CLOSE_FRAME, "reset")
        self.ws.transport.abort()

    async def move_to(self, pod: int) -> None:
        """Open a second socket to ``pod`` (a takeover) and send from it from now on;
        the old one is left to the broker to close (4409)."""
        async with self._moving:
            await self._move(pod)

    async def _move(self, pod: int, rotate: bool = False) -> None:
        ws = await self._open(pod, time.monotonic() + 120, rotate)
        self.ws = ws
        self._index = len(self.history) - 1
        task = asyncio.get_running_loop().create_task(self._watch(ws, self._index))
        self._old.add(task)
        task.add_done_callback(self._old.discard)

    async def run(self, stop: asyncio.Event, max_seconds: float = 3600.0) -> None:
        """Send until ``stop`` is set (or ``max_seconds``), reconnecting whenever the
        socket ends."""
        await self.move_to(self.pod)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        give_up = next_at + max_seconds
        while not stop.is_set() and time.monotonic() < give_up:
            ws = self.ws
            assert ws is not None
            number = len(self.sent) + 1
            index = self._index
            try:
                await ws.send(str(number))
            except ConnectionClosed:
                async with self._moving:
                    if self.ws is ws:  # ended under us, not moved: reconnect elsewhere
                        await self._move((self.pod + 1) % len(self.urls), rotate=True)
                continue
            self.sent.append(number)
            self.sent_at.append(time.monotonic())
            self.sent_on.append(index)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def finish(self) -> None:
        """Close normally and wait until the broker has seen it."""
        if self.ws is not None:
            await self.ws.close()
        if self._old:
            await asyncio.wait(list(self._old), timeout=30)

    def socket_at(self, moment: float) -> Socket | None:
        """The socket that was open at ``moment`` (the newest, during a takeover)."""
        for sock in reversed(self.history):
            if sock.open_during(moment, moment):
                return sock
        return None


@dataclass
class FaultLog:
    """What a fault did, so that ``check`` can tell a loss in flight from a real one.

    ``dead``: pods killed, and when. ``windows``: (pods, start, end) while a fault made
    those pods (``None``: every pod) unable to route a push they had accepted.
    """

    dead: dict[int, float] = field(default_factory=dict)
    windows: list[tuple[frozenset[int] | None, float, float]] = field(default_factory=list)
    broke_within: float = 0.2  # a number sent this long before a socket broke was in flight
    push_grace: float = 1.0  # a push's socket must have stayed open this long after

    def affected(self, pod: int, start: float, end: float) -> bool:
        return any(
            (pods is None or pod in pods) and since <= end and until >= start
            for pods, since, until in self.windows
        )


@dataclass
class PushRecord:
    """One ``POST /v1/messages`` the business server made, and what the API said."""

    payload: str
    kind: str  # tunnels | users | all
    targets: tuple[str, ...]  # tunnel ids or user ids; () for all
    started: float
    answered: float
    status: int | str  # HTTP status, or the exception's name
    not_connected: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == 200


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    punished: list[tuple[str, int, str]] = field(default_factory=list)
    unpaired: list[tuple[str, list[str]]] = field(default_factory=list)
    sent: int = 0
    delivered: int = 0
    lost_in_flight: int = 0
    lost_otherwise: int = 0
    redelivered: int = 0  # extra copies of a message event with an id already seen
    duplicated_other: int = 0  # a number delivered again as a new event (another id)
    lifecycle_redelivered: int = 0
    outside_lifecycle: int = 0  # messages delivered while the tunnel was not connected
    pushes_sent: int = 0  # (push, client) pairs the API accepted
    pushes_received: int = 0
    pushes_lost_in_flight: int = 0
    pushes_lost_otherwise: int = 0
    pushes_duplicated: int = 0
    losses: list[tuple[str, int, float, int]] = field(default_factory=list)  # real ones
    push_losses: list[tuple[PushRecord, str]] = field(default_factory=list)  # real ones
    reorders: list[tuple[str, int, int]] = field(default_factory=list)  # tunnel, a, then b<a

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.out_of_order or self.punished or self.unpaired
        )


def _in_flight(client: SteadyClient, number: int, faults: FaultLog) -> bool:
    at = client.sent_at[number - 1]
    sock = client.history[client.sent_on[number - 1]]
    if sock.pod in faults.dead and at >= faults.dead[sock.pod]:
        return True
    return (
        sock.close is not None
        and sock.close[0] == NO_CLOSE_FRAME
        and sock.ended_at is not None
        and sock.ended_at - at <= faults.broke_within  # sent after it broke, too
    )


def _check_messages(
    verdict: Verdict, client: SteadyClient, mine: list[dict[str, Any]], faults: FaultLog
) -> None:
    seen: set[str] = set()
    first: list[dict[str, Any]] = []  # each event once, as a business server de-duplicating
    for event in mine:
        if event["id"] in seen:
            if event["type"] == "tunnel.message":
                verdict.redelivered += 1
            else:
                verdict.lifecycle_redelivered += 1
            continue
        seen.add(event["id"])
        first.append(event)
    numbers = [int(e["data"]) for e in mine if e["type"] == "tunnel.message"]
    verdict.sent += len(client.sent)
    verdict.delivered += len(numbers)
    counts = Counter(numbers)
    for n in client.sent:
        if n in counts:
            continue
        verdict.lost += 1
        if _in_flight(client, n, faults):
            verdict.lost_in_flight += 1
        else:
            verdict.lost_otherwise += 1
            sock = client.history[client.sent_on[n - 1]]
            verdict.losses.append((client.tunnel_id, n, client.sent_at[n - 1], sock.pod))
    verdict.duplicated += sum(c - 1 for c in counts.values() if c > 1)
    unique = [int(e["data"]) for e in first if e["type"] == "tunnel.message"]
    verdict.duplicated_other += sum(c - 1 for c in Counter(unique).values() if c > 1)
    for a, b in itertools.pairwise(unique):
        if b < a:
            verdict.out_of_order += 1
            verdict.reorders.append((client.tunnel_id, a, b))
    connected = False
    for event in first:
        if event["type"] == "tunnel.message":
            verdict.outside_lifecycle += not connected
        else:
            connected = event["type"] == "tunnel.connected"
    lifecycle = [e["type"] for e in first if e["type"] != "tunnel.message"]
    expected = ["tunnel.connected", "tunnel.closed"] * (len(lifecycle) // 2)
    if not lifecycle or lifecycle != expected:
        verdict.unpaired.append((client.tunnel_id, lifecycle))


def _recipients(push: PushRecord, clients: list[SteadyClient]) -> Iterable[SteadyClient]:
    """The clients an accepted push was for: named tunnels the API found connected; for
    users and all, the clients that held a socket open throughout the request."""
    if push.kind == "tunnels":
        named = set(push.targets) - set(push.not_connected)
        return (c for c in clients if c.tunnel_id in named)
    users = set(push.targets)
    return (
        c
        for c in clients
        if (push.kind == "all" or c.user_id in users)
        and any(s.open_during(push.started, push.answered) for s in c.history)
    )


def _check_pushes(
    verdict: Verdict, clients: list[SteadyClient], pushes: list[PushRecord], faults: FaultLog
) -> None:
    got: dict[str, Counter[str]] = {
        c.tunnel_id: Counter(text for text, _, _ in c.received) for c in clients
    }
    for push in pushes:
        if not push.accepted:
            continue
        for client in _recipients(push, clients):
            verdict.pushes_sent += 1
            count = got[client.tunnel_id][push.payload]
            if count:
                verdict.pushes_received += 1
                verdict.pushes_duplicated += count - 1
                continue
            # In flight: the client's socket changed around the push, or its pod was hit.
            until = push.answered + faults.push_grace
            sock = client.socket_at(push.started)
            if (
                sock is None
                or not sock.open_during(push.started, until)
                or faults.affected(sock.pod, push.started, until)
            ):
                verdict.pushes_lost_in_flight += 1
            else:
                verdict.pushes_lost_otherwise += 1
                verdict.push_losses.append((push, client.tunnel_id))


def check(
    clients: list[SteadyClient],
    events: list[dict[str, Any]],
    faults: FaultLog | None = None,
    pushes: list[PushRecord] | None = None,
) -> Verdict:
    """What the receiver's ``events`` say about each client's traffic (and, given
    ``pushes``, what the clients say about the business server's pushes).

    Order and lifecycle are judged as a business server that drops events whose id it has
    seen sees them: a redelivery (same id) is counted, not held against the order."""
    faults = faults or FaultLog()
    verdict = Verdict()
    by_tunnel: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_tunnel.setdefault(event["tunnel_id"], []).append(event)
    for client in clients:
        _check_messages(verdict, client, by_tunnel.get(client.tunnel_id, []), faults)
        for code, reason in client.closes + client.refusals:
            if code in PUNISHING:
                verdict.punished.append((client.tunnel_id, code, reason))
    _check_pushes(verdict, clients, pushes or [], faults)
    return verdict

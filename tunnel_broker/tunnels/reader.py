"""The read side of one open tunnel: each message of its client, relayed or refused, as
the socket hands it over (``protocol.py``), with no task switch per message.

A message is relayed to the business server (an event in the app's queue) unless the
tunnel is closed for abuse, the message is too big, the client sends faster than its
app allows, or the app used its message quota (4429). When a message cannot be relayed
*yet* the reader holds the socket instead: before the business server approved the
tunnel, until the socket this one took over was read to its end, while the app's event
queue is full (back-pressure: the client waits, nothing is dropped), while this pod's
lease may have run out, while the pod reserves more of the app's message quota
(``backend/allowance.py``: rare, a round trip to Redis). The socket then keeps that
message and everything after it, unread, until the wait is over; one task waits, and
the socket resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Protocol

from tunnel_broker.apps import AppLimits
from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.usage.counters import UsageCounters
from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.delivery import EventDelivery


class Socket(Protocol):
    """What a reader needs of its socket (``protocol.TunnelProtocol``)."""

    def resume(self) -> None: ...


class Lease(Protocol):
    """This pod's lease (``backend.base.Lease``): what it reads after ``valid_until``
    (monotonic) waits for the next renewal, by which time a pod that was reaped has
    rejoined."""

    valid_until: float

    def renewed(self) -> Awaitable[None]: ...


class MessageQuota(Protocol):
    """The apps' message quotas (``backend.quotas.Quotas``)."""

    def check(self, app_id: str, limits: AppLimits, n: int = 1) -> bool | Awaitable[None]:
        """True: may go (``take`` it then); False: over the quota; else wait (this never
        raises) and ask again."""
        ...

    def take(self, app_id: str, n: int) -> None: ...


Inbound = Callable[[Tunnel, str | bytes], str | bytes | None]


def _new_message(tunnel: ReliableTunnel, frame: str | bytes) -> bool:
    """Whether a reliable tunnel's frame is the client's next message (what its
    ``receive_numbered`` would relay), without changing the tunnel's sequences."""
    try:
        parsed = reliable.parse(frame)
    except reliable.FrameError:
        return False
    return parsed.kind == reliable.DATA and parsed.seq == tunnel.sequences.accepted + 1


class TunnelReader:
    __slots__ = (
        "_since",
        "_waiting",
        "counters",
        "delivery",
        "inbound",
        "lease",
        "quotas",
        "socket",
        "tunnel",
    )

    def __init__(
        self,
        tunnel: Tunnel,
        socket: Socket,
        delivery: EventDelivery,
        lease: Lease,
        usage: UsageCounters,
        inbound: Inbound,
        quotas: MessageQuota | None = None,
    ) -> None:
        self.tunnel = tunnel
        self.quotas = quotas
        self.socket = socket
        self.delivery = delivery  # looked up per message: a reaped pod starts afresh
        self.lease = lease
        self.counters = usage.of(tunnel.app.id)  # kept per app for the process's life
        self.inbound = inbound  # the protocol's message of a frame (None: nothing to relay)
        self._waiting: asyncio.Future[None] | None = None
        self._since = 0.0  # when the current wait began
        # Nothing is relayed before the business server approved the tunnel, nor before
        # what the socket this one took over read has gone first.
        old = tunnel.predecessor
        if old is not None and not old.ended and not tunnel.resumed:
            self._hold(self._opening())  # a takeover on this pod: rare
            return
        tunnel.predecessor = None  # nothing to wait for (``wait_for_predecessor``)
        if not tunnel.approved.done() and tunnel.close_code is None:
            self._until_approved()

    async def _opening(self) -> None:
        await self.tunnel.wait_approved()
        await self.tunnel.wait_for_predecessor()

    def _until_approved(self) -> None:
        """``_hold(tunnel.wait_approved())`` for every new tunnel, with callbacks instead
        of a task and ``asyncio.wait`` (both showed in the profile of tunnel setup)."""
        tunnel = self.tunnel
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()

        def open_gate(_: object) -> None:
            if not gate.done():
                gate.set_result(None)

        if tunnel.on_close is None:
            tunnel.on_close = loop.create_future()
        tunnel.approved.add_done_callback(open_gate)
        tunnel.on_close.add_done_callback(open_gate)
        self._begin(gate)
        gate.add_done_callback(self._end)

    def frame(self, payload: str | bytes) -> bool:
        """One message of the client; False: the socket holds it (and what follows)."""
        if self._waiting is not None:
            return False
        tunnel = self.tunnel
        app = tunnel.app
        queue = self.delivery.queue(app)
        if queue.full and tunnel.close_code is None:
            # A closing socket is read to its end regardless: what its client sent
            # before our close frame is bounded, and belongs before anything newer.
            self._hold(tunnel.unless_closed(queue.wait_for_room()))
            return False
        if not tunnel.relays:
            return True
        max_bytes = app.limits.max_message_bytes
        # UTF-8 needs at most 4 bytes a character: most texts need no encoding to check.
        size = len(payload)
        if isinstance(payload, str) and size * 4 > max_bytes:
            size = len(payload.encode())
        if size > max_bytes:
            tunnel.close(CloseCode.MESSAGE_TOO_BIG, "message_too_big")
            return True
        now = monotonic()
        lease = self.lease
        if now > lease.valid_until:
            self._hold(lease.renewed())
            return False
        numbered = tunnel if isinstance(tunnel, ReliableTunnel) else None
        # The reliable protocol charges its own frames (``Tunnel.receive_numbered``).
        if numbered is None and not tunnel.bucket.take(now):
            tunnel.close(CloseCode.POLICY_VIOLATION, "rate_limited")
            return True
        # The quota as the app has it now (an operator may change it at run time).
        limits = (self.delivery.apps.get(app.id) or app).limits
        quota = limits.message_quota is not None and self.quotas is not None
        if (  # a reliable tunnel's message is checked before its sequences take it
            quota
            and numbered is not None
            and _new_message(numbered, payload)
            and not self._admitted(limits)
        ):
            return self._waiting is None  # refused (dropped), or held (read again)
        tunnel.last_activity = now
        relayed = self.inbound(tunnel, payload)
        if relayed is None:
            return True
        if quota:
            assert self.quotas is not None
            # The other protocols' frames are read again after a wait, at no cost.
            if numbered is None and not self._admitted(limits):
                return self._waiting is None
            self.quotas.take(app.id, 1)
        counters = self.counters
        counters.messages_in += 1
        if isinstance(relayed, str) and not relayed.isascii():
            counters.bytes_in += len(relayed.encode())
        else:
            counters.bytes_in += len(relayed)
        # The epoch too: a socket registered again after its pod was reaped has a new one.
        if numbered is None:
            event, delivered = events.message(tunnel.fragment, tunnel.tunnel_id, relayed), None
        else:
            event, delivered = numbered.numbered_event(relayed)
        queue.emit(event, delivered, tunnel.epoch)
        return True

    def _admitted(self, limits: AppLimits) -> bool:
        """Whether the app's message quota has this message; if not, the socket holds
        it (a reservation is under way) or the tunnel closes 4429 (the quota is used up:
        nothing more of the socket is relayed, ``ABUSE_REASONS``)."""
        assert self.quotas is not None
        tunnel = self.tunnel
        verdict = self.quotas.check(tunnel.app.id, limits, 1)
        if verdict is True:
            return True
        if verdict is False:
            tunnel.close(CloseCode.QUOTA_EXCEEDED, "message_quota")
        else:  # a closing socket waits for the reservation itself (it is bounded)
            self._hold(verdict if tunnel.closing else tunnel.unless_closed(verdict))
        return False

    def _hold(self, wait: Awaitable[None]) -> None:
        """Stop reading until ``wait`` is done: back-pressure, not loss.

        The client's messages meanwhile wait unread (in the kernel, then in its own
        socket), and its keepalive answers with them (``protocol.py`` lets no deadline
        run out while it holds them). What it sent at its allowed rate meanwhile then
        arrives at once and is not charged as a burst (``TokenBucket.forgive``)."""
        task = asyncio.get_running_loop().create_task(self._wait(wait))
        self._begin(task)
        task.add_done_callback(self._end)

    @staticmethod
    async def _wait(wait: Awaitable[None]) -> None:
        await wait

    def _begin(self, waiting: asyncio.Future[None]) -> None:
        self._waiting = waiting
        self._since = monotonic()
        self.tunnel.held = True

    def _end(self, waiting: asyncio.Future[None]) -> None:
        tunnel = self.tunnel
        tunnel.held = False
        now = monotonic()
        tunnel.bucket.forgive(now - self._since, now)
        tunnel.last_activity = now
        if self._waiting is waiting:
            self._waiting = None
        if not waiting.cancelled():
            self.socket.resume()

    async def drained(self) -> None:
        """Until every message the socket read was taken (the socket has ended: what it
        holds is still relayed, after the waits it is held for)."""
        while (waiting := self._waiting) is not None:
            if waiting.done():
                # Its callbacks (``_end``) are scheduled, not run: awaiting a finished
                # future does not yield, and this loop would never let them run.
                await asyncio.sleep(0)
            else:
                await asyncio.shield(waiting)

    async def stop(self) -> None:
        """Stop waiting (the tunnel's task is being cancelled)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting

"""What a reliable tunnel's resume needs, kept in Redis so that it works on any pod and
outlives the pod that held the socket (docs/api.md, "The reliable protocol").

Beside each reliable tunnel's record (same hash slot): its sequences (``sent``: pushes
numbered so far, ``accepted``: the last client message relayed) and a stream of the pushes
its client has not acknowledged, ids ``<seq>-1``. Redis numbers every push
(``scripts.NUMBER_PUSH``), so whichever pod numbers it, the numbers of a tunnel form one
sequence:

- a push to named tunnels is numbered by the pod that takes the API call, before it is
  published to the holder: a push to a tunnel whose pod died is kept for its resume;
- a push to users, groups or "all" is numbered by each pod for the tunnels it holds
  (``Numberer``), in the order the pod received them;
- a resuming socket's pod reads the pushes after the client's last one up to ``sent`` as
  its takeover found it (``ATTACH``), and gets every later one from pub/sub: no push falls
  between the two.

Acknowledgements trim the stream and ``accepted`` marks are written behind, batched.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.scripts import MARK_ACCEPTED, NUMBER_PUSH
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel as Tunnel

logger = logging.getLogger("tunnel_broker.backend.redis.resumes")

FLUSH_SECONDS = 0.05  # acknowledgements and accepted marks, written behind


def _stored(payload: str | bytes) -> tuple[str, str]:
    """(kind, text): the pod's clients decode every reply as UTF-8, so bytes are kept
    in base64."""
    if isinstance(payload, str):
        return "t", payload
    return "b", base64.b64encode(payload).decode()


@dataclass(frozen=True, slots=True)
class Numbered:
    node: str  # the pod holding the tunnel, "" if it has no record
    seq: int  # its number; 0: not a reliable tunnel (or not held where required); -1: full


class ResumeStore:
    def __init__(self, client: aioredis.Redis, node_id: str, health: RedisHealth) -> None:
        self.redis = client
        self.node_id = node_id
        self.health = health
        self._number = client.register_script(NUMBER_PUSH)
        self._mark = client.register_script(MARK_ACCEPTED)
        self._trims: dict[tuple[str, str], int] = {}
        self._marks: dict[tuple[str, str], tuple[int, list[Callable[[], None]]]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def number(
        self, pushes: list[tuple[str, str, str | bytes]], here: bool
    ) -> list[Numbered]:
        """Number each ``(app_id, tunnel_id, payload)`` in one round trip, in order;
        ``here``: only tunnels this pod holds. Neighbours with the same app and payload
        (a broadcast) share one script call."""
        if not pushes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        start = 0
        while start < len(pushes):
            app_id, _, payload = pushes[start]
            end = start + 1
            while end < len(pushes) and pushes[end][0] == app_id and pushes[end][2] is payload:
                end += 1
            tunnel_keys = []
            for _, tunnel_id, _ in pushes[start:end]:
                tunnel_keys += [
                    keys.tunnel(app_id, tunnel_id),
                    keys.resume_state(app_id, tunnel_id),
                    keys.resume_buffer(app_id, tunnel_id),
                ]
            await self._number(
                keys=tunnel_keys,
                args=[*_stored(payload), self.node_id if here else ""],
                client=pipe,
            )
            start = end
        results: list[Numbered] = []
        for reply in await pipe.execute():
            results += [Numbered(str(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]
        return results

    async def replay(
        self, app_id: str, tunnel_id: str, after: int, upto: int
    ) -> list[tuple[int, str | bytes]]:
        """The kept pushes numbered ``after + 1`` to ``upto``, in order."""
        if upto <= after:
            return []
        entries = await self.redis.xrange(
            keys.resume_buffer(app_id, tunnel_id), f"{after + 1}-0", f"{upto}-1"
        )
        kept: list[tuple[int, str | bytes]] = []
        for entry_id, fields in entries or ():
            if fields is None:
                continue
            kind, payload = str(fields["k"]), str(fields["p"])
            seq = int(str(entry_id).split("-", 1)[0])
            kept.append((seq, base64.b64decode(payload) if kind == "b" else payload))
        return kept

    def acknowledged(self, app_id: str, tunnel_id: str, seq: int) -> None:
        self._trims[(app_id, tunnel_id)] = seq
        self._soon()

    def accepted(self, app_id: str, tunnel_id: str, seq: int, then: Callable[[], None]) -> None:
        """Note that the business server has message ``seq`` (and all before it); ``then``
        once Redis knows it too."""
        key = (app_id, tunnel_id)
        _, waiting = self._marks.get(key, (0, []))
        waiting.append(then)
        self._marks[key] = (seq, waiting)
        self._soon()

    def _soon(self) -> None:
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(FLUSH_SECONDS, self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Write the acknowledgements and marks gathered since the last flush."""
        trims, self._trims = self._trims, {}
        marks, self._marks = self._marks, {}
        if not trims and not marks:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (app_id, tunnel_id), seq in trims.items():
            pipe.xtrim(keys.resume_buffer(app_id, tunnel_id), minid=f"{seq + 1}-0")
        for (app_id, tunnel_id), (seq, _) in marks.items():
            await self._mark(keys=[keys.resume_state(app_id, tunnel_id)], args=[seq], client=pipe)
        try:
            await pipe.execute()
        except RedisError as exc:
            self.health.mark_unhealthy(exc)
            # Marks matter for a resume elsewhere: keep them for the next flush.
            for key, mark in marks.items():
                self._marks.setdefault(key, mark)
            self._soon()
            return
        for _, waiting in marks.values():
            for then in waiting:
                then()

    async def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.health.healthy:
            await self.flush()


class Numberer:
    """Pushes to this pod's reliable tunnels that Redis must number first (pushes to
    users, groups and "all"): gathered per turn of the loop, numbered in one round trip,
    then written to their sockets, in the order they came."""

    def __init__(
        self,
        store: ResumeStore,
        on_error: Callable[[RedisError], None],
        holder: Callable[[str, str], object],
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.holder = holder  # the socket holding a tunnel on this pod now
        self._queue: list[tuple[Tunnel, str | bytes]] = []
        self._running: asyncio.Task[None] | None = None

    def push(self, tunnel: Tunnel, payload: str | bytes) -> bool:
        self._queue.append((tunnel, payload))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _run(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # gather this turn's pushes
                batch, self._queue = self._queue, []
                await self._number(batch)
        finally:
            self._running = None

    async def _number(self, batch: list[tuple[Tunnel, str | bytes]]) -> None:
        pushes = [(t.app.id, t.tunnel_id, payload) for t, payload in batch]
        try:
            results = await self.store.number(pushes, here=True)
        except RedisError as exc:
            self.on_error(exc)
            logger.warning("%d pushes to reliable tunnels lost: redis unreachable", len(batch))
            return
        for (tunnel, payload), numbered in zip(batch, results, strict=True):
            # A socket that resumed meanwhile writes it: Redis numbered it after the
            # resume took its count of the pushes to replay.
            holder = self.holder(tunnel.app.id, tunnel.tunnel_id)
            if isinstance(holder, Tunnel) and holder.sequences is tunnel.sequences:
                tunnel = holder
            if numbered.seq > 0:
                tunnel.push_numbered(numbered.seq, payload)
            elif numbered.seq < 0:
                tunnel.close(CloseCode.RESUME_BUFFER_FULL, "resume_buffer_full")


class SharedInRedis:
    """``SharedSequences`` for this pod's reliable tunnels (``tunnels/resume.py``)."""

    def __init__(self, store: ResumeStore, numberer: Numberer, health: RedisHealth) -> None:
        self.store = store
        self.numberer = numberer
        self.health = health
        self._refilling: dict[Tunnel, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def attached(
        self, tunnel: Tunnel, took_over: bool, sent: int, accepted: int, sequences: str
    ) -> None:
        """A reliable socket was registered (``ATTACH`` said how far the tunnel's
        sequences went when it took over): when it resumes, the pushes its client missed
        up to then go into its ``pending`` before its welcome; later ones come numbered."""
        state = tunnel.sequences
        state.sequences = sequences or state.sequences
        if tunnel.resume_after is None or not took_over:
            tunnel.resumed = False
            return
        tunnel.resumed = True
        state.sent = max(state.sent, sent)
        state.accepted = max(state.accepted, accepted)
        state.durable = max(state.durable, accepted)
        tunnel.written = min(tunnel.resume_after, sent)
        for seq in [seq for seq in tunnel.pending if seq <= tunnel.written]:
            del tunnel.pending[seq]  # inherited from the old socket, already received
        try:
            kept = await self.store.replay(tunnel.app.id, tunnel.tunnel_id, tunnel.written, sent)
        except RedisError as exc:  # the tunnel is registered already: fetch them later
            self.health.mark_unhealthy(exc)
            self.refill(tunnel, tunnel.written, sent)
            return
        for seq, payload in kept:
            tunnel.push_numbered(seq, payload)

    def push(self, tunnel: Tunnel, payload: str | bytes) -> bool:
        return self.numberer.push(tunnel, payload)

    def refill(self, tunnel: Tunnel, after: int, upto: int) -> None:
        if self._refilling.get(tunnel, 0) >= upto:
            return
        self._refilling[tunnel] = upto
        task = asyncio.get_running_loop().create_task(self._refill(tunnel, after, upto))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self, tunnel: Tunnel, after: int, upto: int) -> None:
        try:
            kept = await self.store.replay(tunnel.app.id, tunnel.tunnel_id, after, upto)
        except RedisError as exc:
            self.health.mark_unhealthy(exc)
            return
        finally:
            self._refilling.pop(tunnel, None)
        for seq, payload in kept:
            tunnel.push_numbered(seq, payload)

    def acknowledged(self, tunnel: Tunnel, seq: int) -> None:
        self.store.acknowledged(tunnel.app.id, tunnel.tunnel_id, seq)

    def accepted(self, tunnel: Tunnel, seq: int) -> None:
        self.store.accepted(
            tunnel.app.id, tunnel.tunnel_id, seq, lambda: tunnel.durably_accepted(seq)
        )

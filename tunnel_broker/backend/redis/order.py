"""Event order across pods: a tunnel's new events never overtake its old ones.

Events of one tunnel are ordered by the pod that emits them (``webhooks/batching.py``).
A tunnel moves between pods, though: a client reconnects through the load balancer to
another pod, taking the tunnel over while the old pod may still hold some of its events
(the business server is slow or down), or after the old pod reported it closed but
before that ``tunnel.closed`` was delivered. The new pod must then deliver nothing of the
tunnel until the old pod has delivered everything it held.

How (the Redis side is in ``scripts.py``):
- each tunnel has an *owed* set: pods that may hold undelivered events of it. A pod is
  put on it when it reports the tunnel closed or loses it to a takeover (both atomically
  with the record change), and takes itself off once every event of the sockets it let
  go is delivered (counted per socket: an *epoch*, ``webhooks/batching.py``), then tells
  the pod now holding the tunnel (``Released``);
- a pod attaching a tunnel whose owed set names another pod *holds* the new socket's
  epoch (its events are parked in order, not sent) until the set names no other pod: on
  a ``Released`` message, or found by a poll (a message may be lost while a
  subscription reconnects);
- a pod gone (stopped, or its lease expired) with events undelivered left them in its
  journal (``journal.py``): the pod adopting the journal takes its place on the owed sets
  in the same step. A gone pod without a journal of the app owes nothing more and is
  taken off.

The memory backend needs none of this: one process, one queue per app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.backend.redis.journal import EventJournal
from tunnel_broker.backend.redis.leases import NodeLeases
from tunnel_broker.backend.redis.messages import ControlMessage, Released
from tunnel_broker.backend.redis.registry import TunnelRegistry
from tunnel_broker.webhooks.delivery import AppEventQueue, EventDelivery

logger = logging.getLogger("tunnel_broker.backend.redis")

Publish = Callable[[str, ControlMessage], Awaitable[object]]
Key = tuple[str, str]  # (app_id, tunnel_id)


class EventOrder:
    def __init__(
        self,
        registry: TunnelRegistry,
        leases: NodeLeases,
        journal: EventJournal,
        node_id: str,
        publish: Publish,
        poll_seconds: float,
    ) -> None:
        self.registry = registry
        self.leases = leases
        self.journal = journal
        self.node_id = node_id
        self.publish = publish
        self.poll_seconds = poll_seconds
        # Set by the node once event delivery exists (it is built after the backend).
        self.delivery: EventDelivery | None = None
        self._held: dict[Key, set[int]] = {}  # epochs held here, by tunnel
        self._owing: dict[Key, set[int]] = {}  # epochs let go, not all delivered yet
        self._unsettled: set[Key] = set()  # settlements a Redis error interrupted
        # Adoptions under way: the owed sets already name this pod in the gone pod's
        # place, but the adopted events are not queued yet; nothing is released meanwhile
        # (it would overtake them).
        self.adopting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _queue(self, app_id: str) -> AppEventQueue | None:
        return None if self.delivery is None else self.delivery.queue_of(app_id)

    # ---- the pod that now holds the tunnel ------------------------------------------------

    def attached(self, app_id: str, tunnel_id: str, epoch: int, owed: list[str]) -> None:
        """A socket's tunnel was attached here: hold its events while another pod owes
        older ones."""
        if any(node != self.node_id for node in owed):
            self.hold(app_id, tunnel_id, epoch)

    def hold(self, app_id: str, tunnel_id: str, epoch: int) -> None:
        """Hold the epoch's events until no other pod owes older ones of the tunnel (as
        ``released`` or the poll finds)."""
        queue = self._queue(app_id)
        if queue is not None:
            queue.hold(epoch, tunnel_id)
            self._held.setdefault((app_id, tunnel_id), set()).add(epoch)

    async def released(self, app_id: str, tunnel_id: str) -> None:
        """Another pod says it delivered all it held of a tunnel (or this pod adopted
        what was owed)."""
        if (app_id, tunnel_id) in self._held:
            await self._check((app_id, tunnel_id))

    async def _check(
        self, key: Key, owed: list[str] | None = None, alive: set[str] | None = None
    ) -> None:
        """Release the tunnel's held epochs if no other pod owes its events; ``owed`` and
        ``alive`` (pods with a lease) when the caller read them already."""
        app_id, tunnel_id = key
        if owed is None:
            (owed,) = await self.registry.owed([key])
        others = [node for node in owed if node != self.node_id]
        if others:
            gone = await self._gone(app_id, others, alive)
            if gone:
                # Nothing of theirs is left to deliver (docs/operations.md).
                logger.info("tunnel %s: %s gone; waiting no longer", tunnel_id, ",".join(gone))
                _, owed = await self.registry.settle(app_id, tunnel_id, gone)
                others = [node for node in owed if node != self.node_id]
        if others or self.adopting:
            return
        queue = self._queue(app_id)
        for epoch in self._held.pop(key, ()):
            if queue is not None:
                queue.release(epoch)

    async def _gone(self, app_id: str, owners: list[str], alive: set[str] | None) -> list[str]:
        """Owners that will never settle: pods without a lease and without a journal of
        the app (one with a journal is waiting for its adopter to take its place)."""
        if alive is None:
            alive = await self.leases.alive(owners)
        gone = [pod for pod in owners if pod not in alive]
        if gone:
            kept = await self.journal.exists(app_id, gone)
            gone = [pod for pod in gone if pod not in kept]
        return gone

    # ---- the pod that held it before ------------------------------------------------------

    def owes(self, app_id: str, epoch: int, reports_closed: bool) -> bool:
        """Whether this pod must go on the tunnel's owed set as a socket lets it go: it is
        about to report it closed, or has events of the socket undelivered."""
        if reports_closed:
            return True
        queue = self._queue(app_id)
        return queue is not None and queue.pending_of(epoch) > 0

    def letting_go(self, app_id: str, tunnel_id: str) -> None:
        """A socket of the tunnel is being let go here (its ``let_go`` follows once its
        record is updated): until then a ``Replace`` finding no socket must not settle
        the tunnel, which would take this pod off its owed set with events undelivered."""
        self._owing.setdefault((app_id, tunnel_id), set())

    def let_go(self, app_id: str, tunnel_id: str, epoch: int | None) -> None:
        """This pod let a tunnel go (a socket closed or was taken over, or it reported a
        dead pod's tunnel closed): take it off the owed set once the events of that
        ``epoch`` are delivered. ``None``: a takeover of a socket already gone here."""
        key = (app_id, tunnel_id)
        if epoch is None:
            if key not in self._owing:
                self._spawn(self._settle(key))
            return
        self._owing.setdefault(key, set()).add(epoch)
        self._spawn(self._settle_after(key, epoch))

    async def _settle_after(self, key: Key, epoch: int) -> None:
        queue = self._queue(key[0])
        if queue is not None and queue.pending_of(epoch):
            queue.when_delivered(epoch, lambda: self._spawn(self._settle_after(key, epoch)))
            return
        owing = self._owing.get(key, set())
        owing.discard(epoch)
        if owing:
            return  # another socket of the tunnel here still has events undelivered
        self._owing.pop(key, None)
        await self._settle(key)

    async def _settle(self, key: Key) -> None:
        app_id, tunnel_id = key
        try:
            holder, _ = await self.registry.settle(app_id, tunnel_id, [self.node_id])
        except RedisError as exc:
            logger.warning("tunnel %s: settling failed (%s); will retry", tunnel_id, exc)
            self._unsettled.add(key)
            return
        self._unsettled.discard(key)
        if holder and holder != self.node_id:
            with contextlib.suppress(Exception):
                await self.publish(keys.node_channel(holder), Released(app_id, tunnel_id))

    def forget(self) -> None:
        """This pod's events were adopted by another pod (it was cut off and reaped) and
        dropped here: it owes nothing any more, and holds nothing."""
        self._held.clear()
        for key in self._owing:
            self._spawn(self._settle(key))
        self._owing.clear()

    # ---- the safety net -------------------------------------------------------------------

    async def run(self) -> None:
        """Poll what messages may have missed: held tunnels whose owers are done or
        gone, and settlements a Redis error interrupted."""
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            await asyncio.sleep(self.poll_seconds)
            for key in list(self._unsettled):
                if key not in self._owing:
                    await self._settle(key)
            held = list(self._held)
            if not held:
                continue
            try:
                # Two round trips for all; more only for tunnels whose owers are gone.
                owed_lists = await self.registry.owed(held)
                pods = {o for owed in owed_lists for o in owed}
                alive = await self.leases.alive(sorted(pods - {self.node_id}))
                for key, owed in zip(held, owed_lists, strict=True):
                    await self._check(key, owed, alive)
            except RedisError:
                raise_if_cancelled()
                continue  # the lease loop notices; try again next round
            except Exception:
                raise_if_cancelled()
                logger.exception("checking the event order of held tunnels failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

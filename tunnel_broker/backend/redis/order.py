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
  with the record change), and takes itself off once it holds no socket and no
  undelivered event of the tunnel, then tells the pod now holding it (``Released``);
- a pod attaching a tunnel whose owed set names another pod *holds* the tunnel's events
  (queued in order, not sent) until the set names no other live pod: on a ``Released``
  message, or found by a poll (a message may be lost while a subscription reconnects;
  a dead pod's events are gone with it and it is taken off).

The memory backend needs none of this: one process, one queue per app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.leases import NodeLeases
from tunnel_broker.backend.redis.messages import ControlMessage, Released
from tunnel_broker.backend.redis.registry import TunnelRegistry
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.webhooks.delivery import EventDelivery

logger = logging.getLogger("tunnel_broker.backend.redis")

Publish = Callable[[str, ControlMessage], Awaitable[None]]
Key = tuple[str, str]  # (app_id, tunnel_id)


class EventOrder:
    def __init__(
        self,
        registry: TunnelRegistry,
        leases: NodeLeases,
        hub: Hub,
        node_id: str,
        publish: Publish,
        poll_seconds: float,
    ) -> None:
        self.registry = registry
        self.leases = leases
        self.hub = hub
        self.node_id = node_id
        self.publish = publish
        self.poll_seconds = poll_seconds
        # Set by the node once event delivery exists (it is built after the backend).
        self.delivery: EventDelivery | None = None
        self._held: set[Key] = set()  # tunnels whose events this pod holds back
        self._unsettled: set[Key] = set()  # settlements that failed on a Redis error
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        return len(self._held)

    # ---- the pod that now holds the tunnel ------------------------------------------------

    def attached(self, app_id: str, tunnel_id: str, owed: list[str]) -> None:
        """A tunnel was attached here; hold its events while another pod owes older ones."""
        if not any(node != self.node_id for node in owed):
            return
        queue = None if self.delivery is None else self.delivery.queue_of(app_id)
        if queue is None:
            return
        queue.hold(tunnel_id)
        self._held.add((app_id, tunnel_id))

    async def released(self, app_id: str, tunnel_id: str) -> None:
        """Another pod says it delivered all it held of a tunnel."""
        if (app_id, tunnel_id) in self._held:
            await self._check((app_id, tunnel_id))

    async def _check(self, key: Key) -> None:
        app_id, tunnel_id = key
        _, owed = await self.registry.settle(app_id, tunnel_id, [])
        others = [node for node in owed if node != self.node_id]
        if others:
            dead = [node for node in others if node not in await self.leases.alive(others)]
            if dead:
                # Their events died with them (docs/operations.md); wait for them no longer.
                logger.warning("tunnel %s: %s died owing events", tunnel_id, ",".join(dead))
                _, owed = await self.registry.settle(app_id, tunnel_id, dead)
                others = [node for node in owed if node != self.node_id]
        if others or key not in self._held:
            return
        self._held.discard(key)
        queue = None if self.delivery is None else self.delivery.queue_of(app_id)
        if queue is not None:
            queue.release(tunnel_id)

    # ---- the pod that held it before ------------------------------------------------------

    def owes(self, app_id: str, tunnel_id: str, reports_closed: bool) -> bool:
        """Whether this pod must go on the tunnel's owed set as it lets the tunnel go:
        it is about to report it closed, or still has events of it undelivered."""
        if reports_closed:
            return True
        queue = None if self.delivery is None else self.delivery.queue_of(app_id)
        return queue is not None and queue.pending_of(tunnel_id) > 0

    def let_go(self, app_id: str, tunnel_id: str) -> None:
        """This pod let a tunnel go (closed, taken over, or reaped on a dead pod's behalf):
        take it off the owed set once everything of it here is delivered."""
        self._spawn(self._settle_when_drained((app_id, tunnel_id)))

    async def _settle_when_drained(self, key: Key) -> None:
        app_id, tunnel_id = key
        if self.hub.get(app_id, tunnel_id) is not None:
            return  # a socket of it is open here again: its own let_go settles
        queue = None if self.delivery is None else self.delivery.queue_of(app_id)
        if queue is not None and queue.pending_of(tunnel_id):
            queue.when_drained(tunnel_id, lambda: self.let_go(app_id, tunnel_id))
            return
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

    # ---- the safety net -------------------------------------------------------------------

    async def run(self) -> None:
        """Poll what messages may have missed: held tunnels whose debtors are done or
        dead, and settlements a Redis error interrupted."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            for key in list(self._unsettled):
                await self._settle_when_drained(key)
            for key in list(self._held):
                try:
                    await self._check(key)
                except RedisError:
                    break  # the lease loop notices; try again next round
                except Exception:
                    logger.exception("checking the event order of %s failed", key[1])

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

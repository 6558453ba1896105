"""A pod's upkeep in the cluster: its lease, renewed every eighth of it; what it does when
Redis answers again after an outage (or it finds its lease gone after a pause); reaping
pods whose lease expired; adopting the journals of pods that stopped; closing the Redis
connections a burst opened once they sit idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from tunnel_broker.backend.redis.connection import TrimmedPool
from tunnel_broker.backend.redis.health import raise_if_cancelled

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend

logger = logging.getLogger("tunnel_broker.backend.redis")

TRIM_SECONDS = 15.0  # a connection no call needed for this long (at most twice it) closes


class Upkeep:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.previous_run_reaped = False

    async def first_renewal(self) -> None:
        """At start; may raise ``RedisError`` (the pod then starts unready)."""
        renewed_at = time.monotonic()
        await self.backend.leases.renew()
        self._extend_lease(renewed_at)
        await self._reap_previous_run()

    async def _reap_previous_run(self) -> None:
        """Deliver what a previous process with our node id left, and report its tunnels
        closed now rather than leaving them in the indexes forever."""
        if self.previous_run_reaped:
            return
        backend = self.backend
        stale = await backend.leases.reap(backend.node_id, announce=False)
        self.previous_run_reaped = True
        if stale:
            logger.warning("reported %d tunnels of a previous run of this node closed", stale)

    async def run(self) -> None:
        backend = self.backend
        interval = backend.lease_seconds / 8
        health = backend.health
        next_trim = time.monotonic() + TRIM_SECONDS
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            await asyncio.sleep(interval)
            if time.monotonic() >= next_trim:
                next_trim = time.monotonic() + TRIM_SECONDS
                await self._trim()
            if health.saw_masters(backend.topology.masters(backend.redis)):
                await backend.subscription.restart()
            try:
                recovering = not health.healthy
                renewed_at = time.monotonic()
                # A lease gone while Redis answered: this pod was paused and reaped.
                recovering |= await backend.leases.renew() and self.previous_run_reaped
                if recovering and not backend.subscription.subscribed.is_set():
                    continue  # repair once the others' messages reach this pod again
                await self._reap_previous_run()
                if recovering:
                    await self._repair()
                    health.mark_healthy()
                    if backend.on_repaired is not None:
                        await backend.on_repaired()
                    logger.info("redis reachable again; indexes repaired")
                self._extend_lease(renewed_at)
                await backend.takeovers.announce_waiting()
                # Right after an outage every lease looks expired; give pods one lease
                # to renew before reaping any.
                if time.monotonic() - health.healthy_since >= backend.lease_seconds:
                    await backend.leases.reap_expired()
                    await backend.leases.end_parked()
                await backend.adoption.adopt_stopped()
            except RedisError as exc:
                raise_if_cancelled()
                health.mark_unhealthy(exc)
            except Exception:
                raise_if_cancelled()
                logger.exception("lease loop failed; retrying")

    async def _trim(self) -> None:
        pool = getattr(self.backend.redis, "connection_pool", None)  # none on a cluster
        if isinstance(pool, TrimmedPool):
            closed = await pool.trim()
            if closed:
                logger.debug("closed %d idle redis connections", closed)

    def _extend_lease(self, renewed_at: float) -> None:
        # Others take the lease for expired at three quarters of it (``leases.py``); an
        # eighth less leaves room for a renewal that took its time.
        backend = self.backend
        backend.lease.extend(renewed_at + backend.lease_seconds * (0.75 - 0.125))

    async def _repair(self) -> None:
        """After an outage: forget what we no longer hold, rewrite what we hold."""
        backend = self.backend
        if await backend.leases.take_reaped_marker():
            # Others reported our tunnels closed while we were cut off, and delivered
            # what our journals held: our open sockets rejoin as new connections.
            backend.unrecorded.forget()
            kept = await backend.adoption.adopted_from_here()
            await backend.rejoin.rejoin(backend.hub, kept)
            return
        await backend.unrecorded.record_all()  # before reconcile drops what they name
        await backend.registry.reconcile([(t, backend.conn(t)) for t in backend.hub])
        if backend.order.delivery is not None:
            await backend.journal.rewrite(backend.order.delivery.queues())

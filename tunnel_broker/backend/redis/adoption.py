"""Adopting the journals of pods that are gone (``journal.py``), and delivering their
events before anything newer of the same tunnels.

A pod is gone when its lease expired (it died, or was cut off from Redis: it is reaped,
``leases.py``, and adoption comes first so that its tunnels' ``tunnel.closed`` follows
their other events) or when it stopped (it dropped its lease after writing its journal;
every pod looks for such journals as it renews its lease, and the first adopts them).
"""

from __future__ import annotations

import logging

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.journal import EventJournal
from tunnel_broker.backend.redis.leases import NodeLeases
from tunnel_broker.backend.redis.order import EventOrder
from tunnel_broker.backend.redis.registry import texts
from tunnel_broker.webhooks.batching import Pending

logger = logging.getLogger("tunnel_broker.backend.redis")


class Adoption:
    def __init__(self, journal: EventJournal, leases: NodeLeases, order: EventOrder) -> None:
        self.journal = journal
        self.leases = leases
        self.order = order
        # Off while draining: a leaving pod takes on no other pod's events.
        self.enabled = True

    async def adopt(self, owner: str, app_ids: list[str] | None = None) -> None:
        """Take ``owner``'s journals (of ``app_ids``, or all) and queue their events;
        this pod owes them now."""
        delivery = self.order.delivery
        if delivery is None:
            return
        if app_ids is None:
            app_ids = (await self._journals()).get(owner, [])
        self.order.adopting += 1
        try:
            adopted = await self.journal.adopt(owner, app_ids)
        finally:
            self.order.adopting -= 1
        # Queued before anything is awaited: no release may run in between.
        epochs_of: dict[str, dict[str, int]] = {}
        for app_id, pendings in adopted.items():
            epochs = epochs_of[app_id] = delivery.emit_adopted(app_id, pendings) or {}
            queue = delivery.queue_of(app_id)
            if queue is not None:
                # Parked events of these tunnels are newer than those adopted, which went
                # before them in the queue; in the journal they must follow them too.
                taken = {id(p) for p in pendings}
                newer = [
                    p
                    for tunnel_id in epochs
                    for p in queue.buffer.parked.get(tunnel_id, ())
                    if id(p) not in taken
                ]
                self.journal.write_again(queue, newer)
        for app_id, pendings in adopted.items():
            for tunnel_id in dict.fromkeys(p.event.tunnel_id for p in pendings):
                # An epoch of None (the app is gone): nothing to deliver, settle at once.
                self.order.let_go(app_id, tunnel_id, epochs_of[app_id].get(tunnel_id))
                await self.order.released(app_id, tunnel_id)  # this pod may be next

    async def _journals(self) -> dict[str, list[str]]:
        """Pods with journals: pod -> app ids."""
        owners: dict[str, list[str]] = {}
        for member in texts(await self.leases.redis.smembers(keys.JOURNALS)):
            app_id, node_id = keys.split_member(member)
            owners.setdefault(node_id, []).append(app_id)
        return owners

    async def adopt_stopped(self) -> None:
        """Adopt the journals of pods that stopped (no lease at all). Those of pods whose
        lease expired are their reaper's (``leases.py``), which adopts them first."""
        if not self.enabled:
            return
        owners = await self._journals()
        owners.pop(self.leases.node_id, None)
        if not owners:
            return
        leased = await self.leases.leased(list(owners))
        for owner, app_ids in owners.items():
            if owner in leased:
                continue
            lock = keys.REAP_LOCK + owner
            if not await self.leases.redis.set(lock, self.leases.node_id, nx=True, ex=60):
                continue
            try:
                await self.adopt(owner, app_ids)
            finally:
                await self.leases.redis.delete(lock)

    async def adopted_from_here(self) -> dict[tuple[str, str], list[Pending]]:
        """This pod was reaped while cut off from Redis: its reaper adopted its journals
        and delivers them. With durable events it drops what it holds but the events it
        never wrote (read meanwhile, or just before): those it returns, per tunnel, to be
        delivered after their tunnels' new ``tunnel.connected`` (``rejoin.py``).

        Returns without having awaited anything after the queues were emptied: their
        sockets' readers go on at the caller's next wait, by when it must have given
        each socket a new epoch."""
        delivery = self.order.delivery
        if not self.journal.durable or delivery is None:
            return {}
        await self.journal.forget()  # first: the readers wait (reading is paused)
        taken = await delivery.take_undelivered()
        self.order.forget()
        kept: dict[tuple[str, str], list[Pending]] = {}
        for app_id, pendings in taken.items():
            for pending in pendings:
                if pending.entry is None:
                    kept.setdefault((app_id, pending.event.tunnel_id), []).append(pending)
        return kept

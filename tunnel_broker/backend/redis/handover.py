"""Undelivered events handed from a stopping pod to the others.

A pod stopped while the business server is down (a rolling upgrade during an outage)
still holds events, ``tunnel.closed`` among them. It writes them to a list per app in
Redis, and puts that *hand-over* on the owed sets of their tunnels in its own place
(``order.py``), so that no pod delivers newer events of those tunnels first. Every pod
looks for hand-overs as it renews its lease; the first to find one adopts it whole
(atomically: the list, and its place on the owed sets), delivers the events before
anything of its own, and settles like any pod that let a tunnel go.

What a hand-over keeps is exactly what the pod held when it stopped. A pod that dies
without stopping keeps nothing this way (its tunnels are still reported closed by the
pod that reaps it; see ``leases.py``).
"""

from __future__ import annotations

import logging
import os

import redis.asyncio as aioredis

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.registry import texts
from tunnel_broker.backend.redis.scripts import HAND_OVER_APPEND, TAKE_PLACE
from tunnel_broker.webhooks.events import EncodedEvent, from_record, to_record

logger = logging.getLogger("tunnel_broker.backend.redis")

PREFIX = "handover:"
_CHUNK = 500  # records per script call: Lua's argument list is bounded


def is_handover(owner: str) -> bool:
    """Whether an owed-set member is a hand-over rather than a pod."""
    return owner.startswith(PREFIX)


class Handovers:
    def __init__(self, client: aioredis.Redis, node_id: str) -> None:
        self.redis = client
        self.node_id = node_id
        self._append = client.register_script(HAND_OVER_APPEND)
        self._take_place = client.register_script(TAKE_PLACE)

    async def hand_over(self, undelivered: dict[str, list[EncodedEvent]]) -> int:
        """Leave ``undelivered`` (app id -> events in order) for another pod; how many.
        May raise ``RedisError``."""
        count = 0
        for app_id, events in undelivered.items():
            handover_id = f"{PREFIX}{self.node_id}:{os.urandom(6).hex()}"
            key = keys.handover(app_id, handover_id)
            records = [to_record(e) for e in events]
            for start in range(0, len(records), _CHUNK):
                await self._append(keys=[key], args=records[start : start + _CHUNK])
            # Announced before it takes this pod's place on the owed sets: a hand-over
            # named there is always one some pod will adopt.
            await self.redis.sadd(keys.HANDOVERS, keys.member(app_id, handover_id))
            await self._take_place(
                keys=[key], args=[self.node_id, handover_id, keys.owed_prefix(app_id), ""]
            )
            count += len(records)
        return count

    async def exists(self, app_id: str, handover_id: str) -> bool:
        return bool(await self.redis.exists(keys.handover(app_id, handover_id)))

    async def adopt(self) -> dict[str, list[EncodedEvent]]:
        """Take every hand-over waiting (app id -> events in order); this pod owes them
        now. Records that do not decode are logged and skipped."""
        adopted: dict[str, list[EncodedEvent]] = {}
        for member in texts(await self.redis.smembers(keys.HANDOVERS)):
            app_id, handover_id = keys.split_member(member)
            records = await self._take_place(
                keys=[keys.handover(app_id, handover_id)],
                args=[handover_id, self.node_id, keys.owed_prefix(app_id), "take"],
            )
            await self.redis.srem(keys.HANDOVERS, member)
            events = adopted.setdefault(app_id, [])
            for record in texts(records):
                try:
                    events.append(from_record(record))
                except ValueError:
                    logger.error("hand-over %s: a record is not an event; skipped", handover_id)
            if records:
                logger.info("adopted %d undelivered events of %s", len(records), handover_id)
        return {app_id: events for app_id, events in adopted.items() if events}

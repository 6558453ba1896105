"""This pod's pub/sub subscription: its own channel, the broadcast channel, app changes.

It blocks on reads indefinitely, so it has a client of its own without read timeouts.
It resubscribes after any failure, with backoff; ``subscribed`` is set only while it is
subscribed, because a pod that cannot hear the others' messages is not ready (pushes
routed to it meanwhile would be lost), and repairs nothing until it hears them again.
Messages are handed on one at a time, in the order published; one that does not decode
is logged and skipped, never a reason to drop the subscription.

On a Redis Cluster each channel is a shard channel (``SSUBSCRIBE``) on the master that
owns its slot, so each has a connection of its own: the pod channels of many pods spread
over the shards. The shard says ``sunsubscribe`` when its slot moves (a resharding, or
its master demoted); the channel is then subscribed again where the slot went. Two
channels are two connections, so their messages are no longer ordered between them
(each channel's are). After a failover (``restart``) every channel is subscribed again:
a connection to a master that was frozen rather than killed would wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth, raise_if_cancelled
from tunnel_broker.backend.redis.messages import ControlMessage, MalformedMessage, decode
from tunnel_broker.backend.redis.topology import RedisTopology
from tunnel_broker.backoff import Backoff

logger = logging.getLogger("tunnel_broker.backend.redis")

Apply = Callable[[ControlMessage], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
MESSAGES = ("message", "smessage")


class SlotMoved(Exception):
    """The shard no longer owns a channel's slot (it said ``sunsubscribe``)."""


class Subscription:
    def __init__(
        self, topology: RedisTopology, node_id: str, health: RedisHealth, connect_timeout: float
    ) -> None:
        self.topology = topology
        self.client: Any = topology.client(connect_timeout, 8, blocking_reads=True)
        self.node_id = node_id
        self.health = health
        self.backoff = Backoff(base=0.1, cap=2.0)
        self.subscribed = asyncio.Event()
        self._groups: list[tuple[str, ...]] = []
        self._listening: set[tuple[str, ...]] = set()
        self._open: set[PubSub] = set()

    async def run(self, apply: Apply, on_apps_changed: Callable[[], Hook | None]) -> None:
        channels = (keys.node_channel(self.node_id), keys.BROADCAST, keys.APPS_CHANGED)
        self._groups = [(c,) for c in channels] if self.topology.sharded else [channels]
        await asyncio.gather(
            *(self._listen(group, apply, on_apps_changed) for group in self._groups)
        )

    async def restart(self) -> None:
        """Subscribe every channel again, wherever its master now is."""
        for pubsub in list(self._open):
            connection: Any = pubsub.connection  # None until subscribed
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect()

    async def _listen(
        self, group: tuple[str, ...], apply: Apply, on_apps_changed: Callable[[], Hook | None]
    ) -> None:
        attempt = 0
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            pubsub: PubSub | None = None
            try:
                pubsub = await self._subscribe(group)
                self._open.add(pubsub)
                self._listening.add(group)
                if len(self._listening) == len(self._groups):
                    self.subscribed.set()
                attempt = 0
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "sunsubscribe":
                        raise SlotMoved(message["channel"])
                    if kind not in MESSAGES:
                        continue
                    channel, data = message["channel"], message["data"]
                    if channel == keys.APPS_CHANGED:
                        hook = on_apps_changed()
                        if hook is not None:
                            await hook()
                    else:
                        await self._deliver(channel, data, apply)
                raise SlotMoved(",".join(group))  # the connection ended its subscription
            except SlotMoved as moved:
                logger.info("shard channel %s moved; subscribing where it went", moved)
            except RedisError as exc:
                raise_if_cancelled()
                self.health.mark_unhealthy(exc)
            except Exception:
                raise_if_cancelled()
                logger.exception("pub/sub reader failed; reconnecting")
            finally:
                self._listening.discard(group)
                self.subscribed.clear()
                if pubsub is not None:
                    self._open.discard(pubsub)
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            attempt += 1
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _subscribe(self, group: tuple[str, ...]) -> PubSub:
        if not self.topology.sharded:
            pubsub: PubSub = self.client.pubsub()
            await pubsub.subscribe(*group)
            return pubsub
        # The owner of the channel's slot, as the cluster says now (a failover or a
        # resharding may have moved it since the client last looked).
        await self.client.nodes_manager.initialize()
        (channel,) = group
        node = self.client.get_node_from_key(channel)
        owner = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool(
                connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
            )
        )
        pubsub = owner.pubsub()
        await pubsub.ssubscribe(channel)
        return pubsub

    async def _deliver(self, channel: str, data: str, apply: Apply) -> None:
        try:
            sender, message = decode(data)
        except MalformedMessage as exc:
            logger.error("pub/sub message on %s skipped: %s", channel, exc)
            return
        if channel == keys.BROADCAST and sender == self.node_id:
            return  # applied locally before publishing
        try:
            await apply(message)
        except Exception:
            logger.exception("pub/sub message on %s could not be applied", channel)

    async def close(self) -> None:
        await self.client.aclose()

"""This pod's pub/sub subscription: its own channel, the broadcast channel, app changes.

It blocks on reads indefinitely, so it has a client of its own without read timeouts.
It resubscribes after any failure, with backoff; ``subscribed`` is set only while it is
subscribed, because a pod that cannot hear the others' messages is not ready (pushes
routed to it meanwhile would be lost), and repairs nothing until it hears them again.
Messages are handed on one at a time, in the order published; one that does not decode
is logged and skipped, never a reason to drop the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.messages import ControlMessage, MalformedMessage, decode
from tunnel_broker.backoff import Backoff

logger = logging.getLogger("tunnel_broker.backend.redis")

Apply = Callable[[ControlMessage], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class Subscription:
    def __init__(self, url: str, node_id: str, health: RedisHealth, connect_timeout: float) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_keepalive=True,
        )
        self.node_id = node_id
        self.health = health
        self.backoff = Backoff(base=0.1, cap=2.0)
        self.subscribed = asyncio.Event()

    async def run(self, apply: Apply, on_apps_changed: Callable[[], Hook | None]) -> None:
        attempt = 0
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(
                    keys.node_channel(self.node_id), keys.BROADCAST, keys.APPS_CHANGED
                )
                self.subscribed.set()
                attempt = 0
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    channel, data = message["channel"], message["data"]
                    if channel == keys.APPS_CHANGED:
                        hook = on_apps_changed()
                        if hook is not None:
                            await hook()
                    else:
                        await self._deliver(channel, data, apply)
            except RedisError as exc:
                self.health.mark_unhealthy(exc)
            except Exception:
                logger.exception("pub/sub reader failed; reconnecting")
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            attempt += 1
            await asyncio.sleep(self.backoff.delay(attempt))

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

"""A pod back from being cut off from Redis longer than its lease: its open sockets
rejoin the cluster as new connections of their tunnels.

Meanwhile another pod reaped this one: it delivered what this pod's journals held
(``adoption.py``) and reported its tunnels closed (``node_lost``). The sockets are still
open and their clients unaware, so each is registered again: the business server sees
``tunnel.closed`` then ``tunnel.connected`` again, and then the messages this pod read
but never stored or delivered, and everything newer, held until the reaper has
delivered its part (``order.py``). Nothing a client sent is lost, and nothing follows a
``tunnel.closed`` without a ``tunnel.connected`` between them. A tunnel whose client
connected elsewhere meanwhile is closed here as replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from tunnel_broker.backend.redis.order import EventOrder
from tunnel_broker.backend.redis.registry import TunnelRegistry
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.webhooks.batching import Pending, new_epoch

logger = logging.getLogger("tunnel_broker.backend.redis")

# Reports a socket registered again: the tunnel (with its new epoch) and the events it
# read that were never stored, in order.
Rejoined = Callable[[Tunnel, list[Pending]], None]


class Rejoin:
    def __init__(
        self,
        registry: TunnelRegistry,
        order: EventOrder,
        node_id: str,
        new_conn: Callable[[Tunnel], str],
    ) -> None:
        self.registry = registry
        self.order = order
        self.node_id = node_id
        self.new_conn = new_conn
        self.on_rejoined: Rejoined | None = None

    async def rejoin(
        self, tunnels: Iterable[Tunnel], kept: dict[tuple[str, str], list[Pending]]
    ) -> None:
        # First, without awaiting anything (the sockets' readers go on at the first
        # wait): a new epoch per open socket, held, starting with ``tunnel.connected``.
        rejoining = [tunnel for tunnel in tunnels if not tunnel.closing]
        for tunnel in rejoining:
            tunnel.epoch = new_epoch()
            self.order.hold(tunnel.app.id, tunnel.tunnel_id, tunnel.epoch)
            if self.on_rejoined is not None:
                self.on_rejoined(tunnel, kept.pop((tunnel.app.id, tunnel.tunnel_id), []))
        lost = sum(len(events) for events in kept.values())
        if lost:  # their sockets closed meanwhile: nothing to rejoin
            logger.error("%d events of tunnels closed while cut off from redis dropped", lost)
        # Then the records; each hold ends once the reaper has delivered its part.
        for tunnel in rejoining:
            key = (tunnel.app.id, tunnel.tunnel_id)
            holder = await self.registry.holder(*key)
            if holder is not None and holder.node != self.node_id:
                # Its client connected elsewhere meanwhile: this socket ends (with a
                # ``tunnel.closed`` of its own, after the ``tunnel.connected`` above).
                tunnel.close(CloseCode.REPLACED, "replaced")
            else:
                await self.registry.write(tunnel, self.new_conn(tunnel), here=False)
            await self.order.released(*key)
        logger.warning("cut off longer than a lease: %d open tunnels rejoined", len(rejoining))

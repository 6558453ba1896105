"""Closes a pod reported while Redis could not hear of them, and the takeovers they invite.

A socket that ends while its pod cannot reach Redis is reported closed (``tunnel.closed``)
but its record stays, naming the ended socket. A client reconnecting to another pod that
reaches Redis first takes that record over as if the socket were still open, and a
takeover sends no ``tunnel.connected`` (docs/api.md): the business server would see the
new socket's messages after the tunnel's ``tunnel.closed``, and a second
``tunnel.closed`` at its end (the chaos run with Redis frozen while clients reconnect).

So the pod remembers such closes until Redis hears of them. Once Redis answers (or a
``Replace`` names the ended socket) it removes the record if that still names the socket;
if another pod took it over instead, this pod sends the ``tunnel.connected`` the takeover
owed, after its ``tunnel.closed``. The taker holds its events until this pod settles the
tunnel, which it does once that event is delivered (``order.py``): the business server
sees closed, connected, then the new socket's messages. Until then nothing settles the
tunnel early (``EventOrder.letting_go``).
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from tunnel_broker.backend.redis.order import EventOrder, Key
from tunnel_broker.backend.redis.registry import TunnelRegistry
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.webhooks import events

logger = logging.getLogger("tunnel_broker.backend.redis")


class UnrecordedCloses:
    def __init__(self, registry: TunnelRegistry, order: EventOrder, node_id: str) -> None:
        self.registry = registry
        self.order = order
        self.node_id = node_id
        # The ended socket's conn, the life of its record, and the tunnel.
        self._closes: dict[Key, tuple[str, str, Tunnel]] = {}
        # The lives of open sockets that took their tunnel over (any other's is its conn).
        self._lives: dict[Tunnel, str] = {}

    def began(self, tunnel: Tunnel, conn: str, life: str) -> None:
        """A socket's record was written: ``life`` is the conn its lifecycle began with."""
        if life != conn:
            self._lives[tunnel] = life

    def ended(self, tunnel: Tunnel, conn: str) -> str:
        """A socket let go: its life."""
        return self._lives.pop(tunnel, conn)

    def noted(self, tunnel: Tunnel, conn: str, life: str) -> None:
        """A socket reported closed whose record Redis could not be told to remove."""
        key = (tunnel.app.id, tunnel.tunnel_id)
        self._closes[key] = (conn, life, tunnel)
        self.order.letting_go(*key)

    def names(self, app_id: str, tunnel_id: str, conn: str) -> bool:
        """Whether ``conn`` is a socket of the tunnel closed here without Redis knowing."""
        close = self._closes.get((app_id, tunnel_id))
        return close is not None and close[0] == conn

    async def record(self, key: Key) -> None:
        """Tell Redis of the close; send ``tunnel.connected`` if the record was taken
        over meanwhile. A Redis error leaves it for the next time Redis answers."""
        close = self._closes.pop(key, None)
        if close is None:
            return
        conn, life, tunnel = close
        app_id, tunnel_id = key
        try:
            removed = await self.registry.remove(
                app_id, tunnel_id, tunnel.user_id, conn, self.node_id
            )
            if removed.removed or removed.holder != self.node_id:  # none open here
                await self.registry.unlist(self.node_id, app_id, tunnel_id)
        except RedisError:
            self._closes.setdefault(key, close)
            return
        # Taken over from the ended socket (or from a socket that took it over in turn)
        # rather than removed late and connected again afresh: the same lifecycle.
        taken_over = not removed.removed and removed.life == life
        queue = self.order.delivery and self.order.delivery.queue_of(app_id)
        if taken_over and removed.holder not in ("", self.node_id) and queue:
            logger.info("tunnel %s: taken over after it closed here; connected again", tunnel_id)
            queue.emit(events.connected(tunnel.fragment, tunnel_id), None, tunnel.epoch)
        self.order.let_go(app_id, tunnel_id, tunnel.epoch)

    async def record_all(self) -> None:
        for key in list(self._closes):
            await self.record(key)

    def forget(self) -> None:
        """This pod was reaped: the reaper reported its tunnels closed from their records."""
        self._closes.clear()

"""Telling a pod that a tunnel it held was taken over elsewhere, even when Redis cannot
carry the message at that moment.

A takeover is written to Redis first, then announced to the old pod (``Replace``), which
closes its socket with 4409 and settles the tunnel's events (``order.py``); the new pod
holds the new socket's events until then. Redis may answer the write and then be taken
for unreachable before the announcement goes out (it stalled, and another call timed out
meanwhile), or the old pod may not be subscribed yet (it is reconnecting after an
outage). Refusing the new socket then is worse: its record names it already, so the old
pod would take the tunnel for continued by a socket that never opened (double
``tunnel.connected``, found by the chaos run with Redis frozen while clients reconnect).
So the takeover stands and its announcement waits: it goes out again on every turn of
the lease loop until the old pod hears it, or until Redis has been steady for a lease,
when a pod nobody hears is gone (reaped).
"""

from __future__ import annotations

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.messages import Replace
from tunnel_broker.backend.redis.order import Publish
from tunnel_broker.backend.redis.reach import PublishReach
from tunnel_broker.errors import BackendUnavailable


class TakeoverNotices:
    def __init__(self, publish: Publish, reach: PublishReach) -> None:
        self.publish = publish
        self.reach = reach
        self._waiting: list[tuple[str, Replace]] = []

    async def announce(self, node: str, replace: Replace) -> None:
        """Tell ``node`` now, or as soon as it can hear it."""
        try:
            heard = await self.publish(keys.node_channel(node), replace)
        except BackendUnavailable:
            heard = 0
        if not heard and self.reach.recovering():
            self._waiting.append((node, replace))

    async def announce_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for node, replace in waiting:
            await self.announce(node, replace)

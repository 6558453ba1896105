"""Whether a publish reached the pods it was meant for.

Pub/sub keeps nothing for a subscriber that is not there. In the lease after an outage
(Redis restarted, say) the other pods may not have subscribed again yet: a push then
reaches only some of them, and the caller must not be told it was done (it hears 503).
Outside that time a missing subscriber is a pod that died or stopped, its tunnels gone
with it, and reaped within its lease.
"""

from __future__ import annotations

import time

from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.leases import NodeLeases
from tunnel_broker.errors import BackendUnavailable


class PublishReach:
    def __init__(self, health: RedisHealth, leases: NodeLeases) -> None:
        self.health = health
        self.leases = leases

    def recovering(self) -> bool:
        """Within a lease of Redis becoming reachable again (or of this pod's start)."""
        return time.monotonic() - self.health.healthy_since < self.leases.lease_seconds

    def check_all(self, receivers: int) -> None:
        """``BackendUnavailable`` if a pod may have missed what was published to all."""
        expected = self.leases.peers | {self.leases.node_id}
        if receivers < len(expected) and self.recovering():
            raise BackendUnavailable(
                f"reached {receivers} of {len(expected)} pods: "
                "the others are reconnecting to redis; some tunnels may have it"
            )

    def check_one(self, receivers: int, node: str) -> bool:
        """Whether pod ``node`` heard what was published on its channel; if not and it
        may be subscribing again, ``BackendUnavailable``."""
        if not receivers and self.recovering():
            raise BackendUnavailable(f"pod {node} is reconnecting to redis")
        return receivers > 0

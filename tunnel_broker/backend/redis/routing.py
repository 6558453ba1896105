"""How a push reaches its tunnels from this pod: named tunnels through their holders
(numbered first when they speak the reliable protocol, ``resumes.py``), users, groups and
"all" through every pod."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.messages import Push
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend


async def push(
    backend: RedisBackend, app_id: str, target: Target, payload: str | bytes
) -> list[str]:
    """``Backend.push``: the named tunnel ids that are not open (or resumable)."""
    hub = backend.hub
    if target.kind != "tunnels":
        receivers = await backend.publish(keys.BROADCAST, Push(app_id, target, payload))
        # Published first, so the other pods work while this one pushes its share.
        await hub.push_sliced(app_id, target, payload)
        backend.reach.check_all(receivers)
        return []
    local = (hub.open_tunnel(app_id, t) for t in target.ids)
    if all(t is not None and t.reliable is None for t in local):
        # All here, open, raw frames (a reply to a client of this pod, say): no lookup.
        # A closing socket may have been taken over by another pod: look that up.
        here = await hub.push_sliced(app_id, target, payload)
        return [t for t in dict.fromkeys(target.ids) if t not in here]
    holders = await backend.health.call(backend.registry.holders(app_id, target.ids))
    by_node: dict[str, list[tuple[str, int]]] = {}
    for tunnel_id, (node, reliable) in holders.items():
        if not reliable:
            by_node.setdefault(node, []).append((tunnel_id, 0))
    # The payload goes to Redis for the reliable tunnels only, numbered in one round trip.
    numbered_ids = [t for t, (_, reliable) in holders.items() if reliable]
    numbered = await backend.health.call(
        backend.resumes.number([(app_id, t, payload) for t in numbered_ids], here=False)
    )
    full: dict[str, list[str]] = {}
    for tunnel_id, result in zip(numbered_ids, numbered, strict=True):
        if result.seq < 0:
            full.setdefault(result.node, []).append(tunnel_id)
        elif result.node:
            by_node.setdefault(result.node, []).append((tunnel_id, result.seq))
    pushed: set[str] = set()
    for node, tunnels in by_node.items():
        kept = {t for t, seq in tunnels if seq > 0}  # reliable: kept for a resume anyway
        if node == backend.node_id:
            pushed |= kept | apply_numbered(backend, app_id, tunnels, payload)
            continue
        some = Target("tunnels", tuple(t for t, _ in tunnels))
        numbers = tuple(seq for _, seq in tunnels) if kept else ()
        receivers = await backend.publish(
            keys.node_channel(node), Push(app_id, some, payload, numbers)
        )
        pushed |= kept
        # Nobody listening for the pod: it died, its tunnels of raw frames are gone (a
        # reliable one keeps the push for its resume elsewhere: never a 503 for it, a
        # retry would push it twice).
        if len(kept) < len(tunnels) and backend.reach.check_one(receivers, node):
            pushed.update(some.ids)
    for tunnel_ids in full.values():
        overflowing = Target("tunnels", tuple(tunnel_ids))
        await backend.close(app_id, overflowing, CloseCode.RESUME_BUFFER_FULL, "resume_buffer_full")
    return [t for t in dict.fromkeys(target.ids) if t not in pushed]


def apply_numbered(
    backend: RedisBackend, app_id: str, tunnels: list[tuple[str, int]], payload: str | bytes
) -> set[str]:
    """Write a push to this pod's named tunnels: numbered ones in their order, the others
    as raw frames. Returns the ids it reached."""
    hub = backend.hub
    reached: set[str] = set()
    raw = [t for t, seq in tunnels if seq == 0]
    if raw:
        reached |= hub.push(app_id, Target("tunnels", tuple(raw)), payload)
    for tunnel_id, seq in tunnels:
        tunnel = hub.get(app_id, tunnel_id)
        if seq > 0 and isinstance(tunnel, ReliableTunnel) and tunnel.push_numbered(seq, payload):
            reached.add(tunnel_id)
    return reached


async def apply(backend: RedisBackend, message: Push) -> None:
    """Another pod's push, on this pod's tunnels."""
    if message.numbers:
        pairs = list(zip(message.target.ids, message.numbers, strict=True))
        apply_numbered(backend, message.app_id, pairs, message.payload)
    else:
        await backend.hub.push_sliced(message.app_id, message.target, message.payload)

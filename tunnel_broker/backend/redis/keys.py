"""Redis key and channel names, in one place.

Everything about one app shares the hash tag ``{app}``, so an app's tunnel records and
indexes live in one Redis Cluster slot and scripts touching several of them stay legal.
Node-level keys use the node id as their tag.
"""

from __future__ import annotations

PREFIX = "tb"


def tunnel(app_id: str, tunnel_id: str) -> str:
    return f"{PREFIX}:{{{app_id}}}:t:{tunnel_id}"


def owed(app_id: str, tunnel_id: str) -> str:
    """Set of pods that may hold undelivered events of a tunnel (scripts.py)."""
    return f"{PREFIX}:{{{app_id}}}:o:{tunnel_id}"


def resume_state(app_id: str, tunnel_id: str) -> str:
    """Hash of a reliable tunnel's sequences: ``sent``, ``accepted`` (``resumes.py``)."""
    return f"{PREFIX}:{{{app_id}}}:rs:{tunnel_id}"


def resume_buffer(app_id: str, tunnel_id: str) -> str:
    """Stream of a reliable tunnel's pushes not acknowledged, ids ``<seq>-1``."""
    return f"{PREFIX}:{{{app_id}}}:rb:{tunnel_id}"


def owed_prefix(app_id: str) -> str:
    """What the scripts prepend to a tunnel id to find its owed set."""
    return f"{PREFIX}:{{{app_id}}}:o:"


def journal(app_id: str, node_id: str) -> str:
    """Stream of a pod's undelivered events of an app (``journal.py``)."""
    return f"{PREFIX}:{{{app_id}}}:j:{node_id}"


def journal_bytes(app_id: str) -> str:
    """Hash: pod -> bytes of the app's events in that pod's journal."""
    return f"{PREFIX}:{{{app_id}}}:jb"


def user_index(app_id: str, user_id: str) -> str:
    return f"{PREFIX}:{{{app_id}}}:u:{user_id}"


def group_index(app_id: str, group: str) -> str:
    return f"{PREFIX}:{{{app_id}}}:g:{group}"


def group_prefix(app_id: str) -> str:
    """What the scripts prepend to a group name to find its index."""
    return f"{PREFIX}:{{{app_id}}}:g:"


def node_tunnels(node_id: str) -> str:
    """Set of ``app_id <NUL> tunnel_id`` a node holds: what to clean up if it dies."""
    return f"{PREFIX}:{{node:{node_id}}}:tunnels"


def node_reaped(node_id: str) -> str:
    """Marker left when a node's tunnels were reported closed by another node."""
    return f"{PREFIX}:{{node:{node_id}}}:reaped"


JOURNALS = f"{PREFIX}:journals"  # set of ``app_id <NUL> node id`` with a journal
NODES = f"{PREFIX}:nodes"  # sorted set: node id -> lease expiry (unix seconds)
APPS = f"{PREFIX}:apps"  # hash: app id -> app JSON
SECRET_KEY = f"{PREFIX}:secret-key"
REAP_LOCK = f"{PREFIX}:reap-lock:"
# sorted set: ``app NUL tunnel NUL conn`` of reliable tunnels whose pod died -> the end of
# their resume window (unix seconds): a resume takes them over, else they end then
PARKED = f"{PREFIX}:parked"


def node_channel(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


BROADCAST = f"{PREFIX}:broadcast"
APPS_CHANGED = f"{PREFIX}:apps-changed"


def member(app_id: str, tunnel_id: str) -> str:
    return f"{app_id}\x00{tunnel_id}"


def split_member(value: str) -> tuple[str, str]:
    app_id, _, tunnel_id = value.partition("\x00")
    return app_id, tunnel_id

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


def usage(app_id: str, hour: str) -> str:
    """Hash of an app's usage in one UTC hour (``hour``: ``YYYYMMDDHH``): a field per
    count, ``tunnel_ms``, and ``peak_tunnels`` (``usage/redis_store.py``)."""
    return f"{PREFIX}:{{{app_id}}}:usage:{hour}"


def usage_applied(app_id: str, node_id: str) -> str:
    """The token of the last usage batch a pod added to the app's buckets: a batch sent
    again after a lost answer is not added twice."""
    return f"{PREFIX}:{{{app_id}}}:usage-applied:{node_id}"


def deliveries(app_id: str) -> str:
    """List of the app's recent webhook deliveries, newest first, capped."""
    return f"{PREFIX}:{{{app_id}}}:deliveries"


def app_index(app_id: str) -> str:
    """Sorted set (all scores 0, ordered by id) of the app's tunnels with a record, open
    or waiting for a resume, all pods together: the ``max_tunnels`` quota counts it, the
    console pages through it. Changed only by the scripts that write and remove records."""
    return f"{PREFIX}:{{{app_id}}}:a"


def message_quota(app_id: str, period: str) -> str:
    """Hash of an app's message quota in one period (``usage/periods.py``): ``used``,
    and per pod ``h:<pod>`` (allowance reserved and not yet used) and ``e:<pod>``
    (when that reservation lapses, Redis time in ms). ``backend/allowance.py``."""
    return f"{PREFIX}:{{{app_id}}}:mq:{period}"


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
# list of audit entries, newest first; tagged with the apps hash's own name so that a
# change and its entry are written by one script, even on a cluster
AUDIT = f"{{{PREFIX}:apps}}:audit"
USAGE_APPS = f"{PREFIX}:usage-apps"  # set of the apps with usage buckets
SECRET_KEY = f"{PREFIX}:secret-key"
REAP_LOCK = f"{PREFIX}:reap-lock:"
# sorted set: ``app NUL tunnel NUL conn`` of reliable tunnels whose pod died -> the end of
# their resume window (unix seconds): a resume takes them over, else they end then
PARKED = f"{PREFIX}:parked"


def trace(app_id: str) -> str:
    """Stream of the app's live-trace records, capped (``trace/redis_relay.py``)."""
    return f"{PREFIX}:{{{app_id}}}:trace"


def tracing(app_id: str) -> str:
    """Set, with a short expiry, while some pod has a watcher of the app's trace."""
    return f"{PREFIX}:{{{app_id}}}:tracing"


def node_status(node_id: str) -> str:
    """Hash a pod keeps current for the operator (``admin/pods.py``): ready, tunnels."""
    return f"{PREFIX}:{{node:{node_id}}}:status"


def node_channel(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


BROADCAST = f"{PREFIX}:broadcast"
APPS_CHANGED = f"{PREFIX}:apps-changed"


def member(app_id: str, tunnel_id: str) -> str:
    return f"{app_id}\x00{tunnel_id}"


def split_member(value: str) -> tuple[str, str]:
    app_id, _, tunnel_id = value.partition("\x00")
    return app_id, tunnel_id

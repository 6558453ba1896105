"""The audit log: every change an operator (or an app, rotating its own key) made, with
who, what and when, and never a key, secret or URL credential.

An entry names the fields that changed, not their values: a webhook URL may carry a
token, limits are visible in the app itself, and keys must never be written anywhere
they could be read back. Entries are kept where the apps are (Redis, in the same step as
the change, or this process) and logged on ``tunnel_broker.audit``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tunnel_broker.timestamps import iso_time

logger = logging.getLogger("tunnel_broker.audit")

MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    operator: str  # the operator's name, or "app:<id>" for a self-service key rotation
    action: str  # app.create, app.update, app.delete, app.rotate_api_key, ...
    app_id: str
    changes: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso_time(self.at),
            "operator": self.operator,
            "action": self.action,
            "app_id": self.app_id,
            "changes": list(self.changes),
        }

    def encode(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def log(self) -> None:
        logger.info(
            "%s %s app=%s changes=%s",
            self.operator,
            self.action,
            self.app_id,
            ",".join(self.changes) or "-",
        )


def decode_entry(raw: str) -> dict[str, Any] | None:
    """A stored entry as the API shows it; None for one that cannot be read."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class MemoryAudit:
    """The entries of a single process (the memory backend), newest first."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=max_entries)

    def add(self, entry: AuditEntry) -> None:
        self._entries.appendleft(entry)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return [e.to_json() for e in list(self._entries)[:limit]]


def changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ (``limits.max_tunnels``), never values."""
    names: list[str] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict) and key != "retiring":
            names.extend(changed_fields(before, after, f"{prefix}{key}."))
        else:
            names.append(f"{prefix}{key}")
    return names

"""Apps kept in Redis, so every pod of a cluster sees the same tenants.

The apps file given at start is upserted (the file wins for the apps it names);
``tunnel-broker apps ...`` edits the same hash. Every change is announced on a channel so
pods reload at once instead of polling.
"""

from __future__ import annotations

import json
from typing import Any

from tunnel_broker.apps import App, AppsFileError, parse_apps
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.topology import RedisTopology


def _dump(app: App) -> str:
    return app.model_dump_json()


def _load(values: Any) -> list[App]:
    raw: list[Any] = [json.loads(str(v)) for _, v in sorted(dict(values).items())]
    return parse_apps(raw, "redis apps")


async def load_apps(client: Any) -> list[App]:
    return _load(await client.hgetall(keys.APPS))


async def upsert_apps(client: Any, apps: list[App], topology: RedisTopology) -> bool:
    """Write the apps that differ from Redis; announce only a real change (every pod
    upserts the same file at start, and an announcement makes every pod reload)."""
    stored = await client.hmget(keys.APPS, [a.id for a in apps]) if apps else []
    changed: dict[Any, Any] = {
        a.id: _dump(a) for a, old in zip(apps, stored, strict=True) if old != _dump(a)
    }
    if not changed:
        return False
    await client.hset(keys.APPS, mapping=changed)
    await topology.publish(client, keys.APPS_CHANGED, "{}")
    return True


class SyncAppStore:
    """The CLI's view of the same hash (a short-lived synchronous client)."""

    def __init__(self, topology: RedisTopology) -> None:
        self.topology = topology
        self.client = topology.sync_client()

    def all(self) -> list[App]:
        return _load(self.client.hgetall(keys.APPS))

    def get(self, app_id: str) -> App:
        value = self.client.hget(keys.APPS, app_id)
        if value is None:
            raise AppsFileError(f"no app {app_id!r} in redis")
        return _load({app_id: value})[0]

    def put(self, app: App, create: bool = False) -> None:
        others = [a for a in self.all() if a.id != app.id]
        parse_apps([json.loads(_dump(a)) for a in [*others, app]], "redis apps")  # key clashes
        if create:
            if not self.client.hsetnx(keys.APPS, app.id, _dump(app)):
                raise AppsFileError(f"app {app.id!r} already exists")
        else:
            self.client.hset(keys.APPS, app.id, _dump(app))
        self.topology.publish_sync(self.client, keys.APPS_CHANGED, "{}")

    def delete(self, app_id: str) -> bool:
        removed = bool(self.client.hdel(keys.APPS, app_id))
        self.topology.publish_sync(self.client, keys.APPS_CHANGED, "{}")
        return removed

    def shared_secret_key(self, candidate: str) -> str:
        """The cluster's token signing key: the first pod's random choice, kept in Redis."""
        self.client.set(keys.SECRET_KEY, candidate, nx=True)
        value = self.client.get(keys.SECRET_KEY)
        assert isinstance(value, str)
        return value

    def close(self) -> None:
        self.client.close()


# An admin change: the app is written only if it is still what the caller read (another
# operator's change meanwhile is not overwritten), and its audit entry in the same step.
# ARGV: app id, expected JSON ("" = must not exist), new JSON ("" = delete), audit
# entry, audit length.
_CHANGE_APP = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 'exists' end
elseif not current then
  return 'missing'
elseif current ~= ARGV[2] then
  return 'changed'
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('LPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return 'ok'
"""


async def change_app(
    client: Any,
    topology: RedisTopology,
    app_id: str,
    expected: str | None,
    new: App | None,
    audit_entry: str,
    audit_length: int,
) -> str:
    """Write (or with ``new`` None delete) an app if its stored JSON is still
    ``expected`` as read (None: it must not exist), with its audit entry, and tell every
    pod. Returns ``ok``, ``exists``, ``missing`` or ``changed``."""
    expected_json = "" if expected is None else expected
    outcome = str(
        await client.eval(
            _CHANGE_APP,
            2,
            keys.APPS,
            keys.AUDIT,
            app_id,
            expected_json,
            "" if new is None else _dump(new),
            audit_entry,
            audit_length,
        )
    )
    if outcome == "ok":
        await topology.publish(client, keys.APPS_CHANGED, "{}")
    return outcome


async def stored_app(client: Any, app_id: str) -> tuple[App, str] | None:
    """An app and its stored JSON as read (what ``change_app`` compares)."""
    value = await client.hget(keys.APPS, app_id)
    return None if value is None else (_load({app_id: value})[0], str(value))


async def audit_entries(client: Any, limit: int) -> list[str]:
    return [str(v) for v in await client.lrange(keys.AUDIT, 0, limit - 1)]

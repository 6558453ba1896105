"""Changing apps while the broker runs (admin API, self-service key rotation), each change
with its audit entry.

With Redis the change is written to the apps every pod loads, if the app is still what
it was when read (two operators changing one app at once: the second gets 409
``app_changed`` instead of silently undoing the first), and announced, so every pod takes
it within a pub/sub round trip; this pod takes it at once. With the memory backend the
change is this process's alone and ends with it (the apps file is read again at start).

Apps named in the apps file are the file's: the admin API shows them but refuses to
change them (409 ``app_in_apps_file``), since the next start would put the file's version
back (with Redis, every pod upserts the file at start).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from tunnel_broker.admin.audit import (
    MAX_ENTRIES,
    AuditEntry,
    MemoryAudit,
    changed_fields,
    decode_entry,
)
from tunnel_broker.admin.rotation import Rotate, without_retired
from tunnel_broker.apps import App, AppRegistry
from tunnel_broker.errors import ApiError
from tunnel_broker.validation import field_errors

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.backend import RedisBackend

Change = Callable[[App], App]
T = TypeVar("T")
ATTEMPTS = 3  # a change raced by another operator's is retried on the fresh app


def invalid_app(exc: ValidationError) -> ApiError:
    errors = field_errors(exc)
    named = ", ".join(e["field"] for e in errors[:5])
    return ApiError("validation_failed", f"invalid field(s): {named}", {"errors": errors})


def _not_found(app_id: str) -> ApiError:
    return ApiError("app_not_found", f"no app {app_id!r}")


class AppAdmin:
    def __init__(
        self, apps: AppRegistry, file_app_ids: Iterable[str], redis: RedisBackend | None
    ) -> None:
        self.apps = apps
        self.file_app_ids = frozenset(file_app_ids)
        self.redis = redis
        self.audit = MemoryAudit()

    # ---- reading -------------------------------------------------------------------------

    async def get(self, app_id: str) -> App:
        """The app as stored now: with Redis, what every pod is taking (this pod may
        not have heard of another pod's change yet)."""
        app, _ = await self._current(app_id)
        return app

    async def all(self) -> list[App]:
        if self.redis is None:
            return self.apps.all()
        from tunnel_broker.backend.redis.apps import load_apps

        return await self._redis_call(load_apps(self.redis.redis))

    async def audit_entries(self, limit: int) -> list[dict[str, Any]]:
        if self.redis is None:
            return self.audit.recent(limit)
        from tunnel_broker.backend.redis.apps import audit_entries

        raw = await self._redis_call(audit_entries(self.redis.redis, limit))
        return [entry for entry in map(decode_entry, raw) if entry is not None]

    # ---- changing ------------------------------------------------------------------------

    async def create(self, app: App, operator: str) -> App:
        if app.id in self.file_app_ids or self.apps.get(app.id) is not None:
            raise ApiError("app_exists", f"an app {app.id!r} exists")
        entry = AuditEntry(operator, "app.create", app.id, ("app",))
        if self.redis is None:
            self.apps.put(app)
            self._written(entry)
            return app
        outcome = await self._write(app.id, None, app, entry)
        if outcome == "exists":
            raise ApiError("app_exists", f"an app {app.id!r} exists")
        self.apps.put(app)
        return app

    async def update(self, app_id: str, change: Change, operator: str, action: str) -> App:
        """Apply ``change`` to the app as stored now; the new app, in force on this pod."""
        self._changeable(app_id)
        for _ in range(ATTEMPTS):
            current, raw = await self._current(app_id)
            try:
                new = change(without_retired(current, time.time()))
            except ValidationError as exc:
                raise invalid_app(exc) from None
            entry = AuditEntry(operator, action, app_id, tuple(_changes(current, new)))
            if self.redis is None:
                self.apps.put(new)
                self._written(entry)
                return new
            outcome = await self._write(app_id, raw, new, entry)
            if outcome == "ok":
                self.apps.put(new)
                return new
            if outcome == "missing":
                raise _not_found(app_id)
        raise ApiError("app_changed", f"app {app_id!r} kept changing; retry")

    async def rotate(
        self, app_id: str, rotate: Rotate, overlap_seconds: float, operator: str, action: str
    ) -> tuple[App, str]:
        """Rotate a key or secret of the app (``admin/rotation.py``); the app, and the
        new key or secret (to be shown once)."""
        fresh: list[str] = []

        def change(app: App) -> App:
            rotated, value = rotate(app, overlap_seconds, time.time())
            fresh[:] = [value]  # a retried change makes another: the last one is kept
            return rotated

        app = await self.update(app_id, change, operator, action)
        return app, fresh[0]

    async def delete(self, app_id: str, operator: str) -> None:
        self._changeable(app_id)
        entry = AuditEntry(operator, "app.delete", app_id, ("app",))
        if self.redis is None:
            await self.get(app_id)
            self.apps.remove(app_id)
            self._written(entry)
            return
        _, raw = await self._current(app_id)
        outcome = await self._write(app_id, raw, None, entry)
        if outcome == "missing":
            raise _not_found(app_id)
        if outcome == "changed":
            raise ApiError("app_changed", f"app {app_id!r} changed meanwhile; retry")
        self.apps.remove(app_id)

    # ---- the parts -------------------------------------------------------------------------

    def _changeable(self, app_id: str) -> None:
        if app_id in self.file_app_ids:
            raise ApiError(
                "app_in_apps_file",
                f"app {app_id!r} is defined in the apps file: change it there",
            )

    async def _current(self, app_id: str) -> tuple[App, str | None]:
        """The app as stored now, and its stored JSON (Redis) for the compare-and-set."""
        if self.redis is None:
            app = self.apps.get(app_id)
            if app is None:
                raise _not_found(app_id)
            return app, None
        from tunnel_broker.backend.redis.apps import stored_app

        found = await self._redis_call(stored_app(self.redis.redis, app_id))
        if found is None:
            raise _not_found(app_id)
        return found

    async def _write(self, app_id: str, raw: str | None, new: App | None, entry: AuditEntry) -> str:
        from tunnel_broker.backend.redis.apps import change_app

        assert self.redis is not None
        outcome = await self._redis_call(
            change_app(
                self.redis.redis,
                self.redis.topology,
                app_id,
                raw,
                new,
                entry.encode(),
                MAX_ENTRIES,
            )
        )
        if outcome == "ok":
            entry.log()
        return outcome

    def _written(self, entry: AuditEntry) -> None:
        self.audit.add(entry)
        entry.log()

    async def _redis_call(self, operation: Awaitable[T]) -> T:
        """Redis failures become ``BackendUnavailable`` (503), as for the other APIs."""
        assert self.redis is not None
        return await self.redis.health.call(operation)


def _changes(old: App, new: App) -> list[str]:
    return changed_fields(old.model_dump(), new.model_dump())

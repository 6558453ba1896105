"""Who is online, as the records in Redis say, whichever pod holds them: one tunnel, and
pages of a user's, a group's or an app's tunnels (the ``Backend`` presence queries of
``RedisBackend``)."""

from __future__ import annotations

from tunnel_broker.backend.base import Page, TunnelRecord
from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.registry import TunnelRegistry


class Presence:
    """Mixed into ``RedisBackend``, whose registry and health it uses."""

    registry: TunnelRegistry
    health: RedisHealth

    async def get(self, app_id: str, tunnel_id: str) -> TunnelRecord | None:
        return await self.health.call(self.registry.get(app_id, tunnel_id))

    async def list_user(self, app_id: str, user_id: str, cursor: str | None, limit: int) -> Page:
        index = keys.user_index(app_id, user_id)
        return await self.health.call(self.registry.page(app_id, index, cursor, limit))

    async def list_group(self, app_id: str, group: str, cursor: str | None, limit: int) -> Page:
        index = keys.group_index(app_id, group)
        return await self.health.call(self.registry.page(app_id, index, cursor, limit))

    async def list_app(self, app_id: str, cursor: str | None, limit: int) -> Page:
        index = keys.app_index(app_id)
        return await self.health.call(self.registry.page(app_id, index, cursor, limit))

    async def count_app(self, app_id: str) -> int:
        return await self.health.call(self.registry.count_app(app_id))

"""Sessions in Redis: one key per session (by skey digest) with a TTL that is renewed on
use but never past the absolute lifetime, and a per-user index for limits and
revocation. Failures take the backend's error path (``RedisHealth``): an unreachable
Redis makes the pod unready, and the caller gets ``BackendUnavailable``."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import redis.asyncio as aioredis

from tunnel_broker.backend.redis import keys
from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.sessions import Session, SessionStore, new_skey, skey_digest


def _session_key(digest: str) -> str:
    return f"{keys.PREFIX}:session:{digest}"


def _user_key(app_id: str, openid: str) -> str:
    return f"{keys.PREFIX}:{{{app_id}}}:sessions:{openid}"


def _profile_key(app_id: str, openid: str) -> str:
    return f"{keys.PREFIX}:{{{app_id}}}:profile:{openid}"


def _ttl(session: Session, now: float) -> int:
    return max(1, math.ceil(min(session.idle_seconds, session.expires_at - now)))


class RedisSessionStore(SessionStore):
    def __init__(self, client: aioredis.Redis, health: RedisHealth) -> None:
        self.redis = client
        self.health = health

    async def create(self, session: Session, max_per_openid: int) -> str:
        skey = new_skey()
        await self.health.call(self._create(session, skey_digest(skey), max_per_openid))
        return skey

    async def _create(self, session: Session, digest: str, max_per_openid: int) -> None:
        now = time.time()
        user_key = _user_key(session.app_id, session.openid)
        await self.redis.set(_session_key(digest), session.to_json(), ex=_ttl(session, now))
        await self.redis.zadd(user_key, {digest: now})
        await self.redis.expireat(user_key, math.ceil(session.expires_at) + 60)
        excess = await self.redis.zcard(user_key) - max_per_openid
        if excess > 0:
            oldest = [str(d) for d in await self.redis.zrange(user_key, 0, excess - 1)]
            await self.redis.delete(*[_session_key(d) for d in oldest])
            await self.redis.zrem(user_key, *oldest)

    async def resolve(
        self, skey: str, now: float | None = None, app_id: str | None = None
    ) -> tuple[Session, float] | None:
        now = time.time() if now is None else now
        return await self.health.call(self._resolve(skey_digest(skey), now, app_id))

    async def _resolve(
        self, digest: str, now: float, app_id: str | None
    ) -> tuple[Session, float] | None:
        key = _session_key(digest)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        session = Session.from_json(str(raw))
        if app_id is not None and session.app_id != app_id:
            return None
        if session.expires_at <= now:
            await self.redis.delete(key)
            return None
        ttl = _ttl(session, now)
        await self.redis.expire(key, ttl)
        return session, now + ttl

    async def revoke(self, skey: str) -> bool:
        return await self.health.call(self._revoke(skey_digest(skey)))

    async def _revoke(self, digest: str) -> bool:
        raw = await self.redis.get(_session_key(digest))
        if raw is None:
            return False
        session = Session.from_json(str(raw))
        await self.redis.delete(_session_key(digest))
        await self.redis.zrem(_user_key(session.app_id, session.openid), digest)
        return True

    async def revoke_user(self, app_id: str, openid: str) -> int:
        return await self.health.call(self._revoke_user(_user_key(app_id, openid)))

    async def _revoke_user(self, user_key: str) -> int:
        digests = [str(d) for d in await self.redis.zrange(user_key, 0, -1)]
        removed = (
            int(await self.redis.delete(*[_session_key(d) for d in digests])) if digests else 0
        )
        await self.redis.delete(user_key)
        return removed

    async def keep_profile(
        self, app_id: str, openid: str, profile: dict[str, Any], seconds: float
    ) -> None:
        key, value = _profile_key(app_id, openid), json.dumps(profile, separators=(",", ":"))
        await self.health.call(self.redis.set(key, value, ex=max(1, math.ceil(seconds))))

    async def profile(self, app_id: str, openid: str) -> dict[str, Any] | None:
        raw = await self.health.call(self.redis.get(_profile_key(app_id, openid)))
        if raw is None:
            return None
        kept = json.loads(raw)
        return kept if isinstance(kept, dict) else None

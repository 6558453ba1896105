"""Sessions in Redis: one key per session (by skey digest) with a TTL that is renewed on
use but never past the absolute lifetime, and a per-user index for limits and
revocation."""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tunnel_broker.backend import keys
from tunnel_broker.backend.base import BackendUnavailable
from tunnel_broker.sessions import Session, SessionStore, new_skey, skey_digest


def _session_key(digest: str) -> str:
    return f"{keys.PREFIX}:session:{digest}"


def _user_key(app_id: str, openid: str) -> str:
    return f"{keys.PREFIX}:{{{app_id}}}:sessions:{openid}"


def _ttl(session: Session, now: float) -> int:
    return max(1, math.ceil(min(session.idle_seconds, session.expires_at - now)))


class RedisSessionStore(SessionStore):
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    async def create(self, session: Session, max_per_openid: int) -> str:
        now = time.time()
        skey = new_skey()
        digest = skey_digest(skey)
        user_key = _user_key(session.app_id, session.openid)
        try:
            await self.redis.set(_session_key(digest), session.to_json(), ex=_ttl(session, now))
            await self.redis.zadd(user_key, {digest: now})
            await self.redis.expireat(user_key, math.ceil(session.expires_at) + 60)
            excess = await self.redis.zcard(user_key) - max_per_openid
            if excess > 0:
                oldest = [str(d) for d in await self.redis.zrange(user_key, 0, excess - 1)]
                await self.redis.delete(*[_session_key(d) for d in oldest])
                await self.redis.zrem(user_key, *oldest)
        except RedisError as exc:
            raise BackendUnavailable("redis is unreachable") from exc
        return skey

    async def resolve(
        self, skey: str, now: float | None = None, app_id: str | None = None
    ) -> tuple[Session, float] | None:
        now = time.time() if now is None else now
        key = _session_key(skey_digest(skey))
        try:
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
        except RedisError as exc:
            raise BackendUnavailable("redis is unreachable") from exc
        return session, now + ttl

    async def revoke(self, skey: str) -> bool:
        digest = skey_digest(skey)
        try:
            raw = await self.redis.get(_session_key(digest))
            if raw is None:
                return False
            session = Session.from_json(str(raw))
            await self.redis.delete(_session_key(digest))
            await self.redis.zrem(_user_key(session.app_id, session.openid), digest)
        except RedisError as exc:
            raise BackendUnavailable("redis is unreachable") from exc
        return True

    async def revoke_user(self, app_id: str, openid: str) -> int:
        user_key = _user_key(app_id, openid)
        try:
            digests = [str(d) for d in await self.redis.zrange(user_key, 0, -1)]
            removed = (
                int(await self.redis.delete(*[_session_key(d) for d in digests])) if digests else 0
            )
            await self.redis.delete(user_key)
        except RedisError as exc:
            raise BackendUnavailable("redis is unreachable") from exc
        return removed

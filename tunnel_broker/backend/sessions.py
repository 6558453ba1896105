"""WeChat login sessions: an unpredictable ``skey`` standing for a verified WeChat user.

Wafer let server sessions expire while clients believed them valid, and its skeys were
predictable. Here an skey is 256 random bits; the store keeps only its SHA-256 (a dump of
Redis holds no usable session); a session has both an idle expiry, renewed on every use,
and an absolute lifetime; a user has at most ``max_sessions_per_openid`` (the oldest is
revoked); and revocation is immediate.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any


def new_skey() -> str:
    return secrets.token_urlsafe(32)


def skey_digest(skey: str) -> str:
    return hashlib.sha256(skey.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    app_id: str
    openid: str
    unionid: str | None
    identity: dict[str, Any]
    created_at: float
    expires_at: float  # absolute end of life
    idle_seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Session:
        return cls(**json.loads(raw))

    def ends_at(self, idle_until: float) -> float:
        """When the session ends unless used again: idle deadline or end of life."""
        return min(self.expires_at, idle_until)

    def public(self, idle_until: float) -> dict[str, Any]:
        """What a business server sees; no secret of any kind is in a session."""
        return {
            "app_id": self.app_id,
            "openid": self.openid,
            "unionid": self.unionid,
            "identity": self.identity,
            "created_at": self.created_at,
            "expires_at": self.ends_at(idle_until),
        }


class SessionStore(ABC):
    @abstractmethod
    async def create(self, session: Session, max_per_openid: int) -> str:
        """Store a session; return its new skey. Revokes the user's oldest sessions
        beyond ``max_per_openid``."""

    @abstractmethod
    async def resolve(
        self, skey: str, now: float | None = None, app_id: str | None = None
    ) -> tuple[Session, float] | None:
        """The live session of an skey and its new idle deadline (the use renews it).
        With ``app_id``, a session of another app is neither returned nor renewed."""

    @abstractmethod
    async def revoke(self, skey: str) -> bool: ...

    @abstractmethod
    async def revoke_user(self, app_id: str, openid: str) -> int: ...

    # A user's profile (nickname, avatar...) as verified at their last full login, so that
    # a login with the code alone (wafer2's ``loginWithCode``) answers it too, as
    # wafer-node-sdk did from its MySQL table. Kept ``seconds`` after that login.
    @abstractmethod
    async def keep_profile(
        self, app_id: str, openid: str, profile: dict[str, Any], seconds: float
    ) -> None: ...

    @abstractmethod
    async def profile(self, app_id: str, openid: str) -> dict[str, Any] | None: ...


class MemorySessionStore(SessionStore):
    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._by_user: dict[tuple[str, str], list[str]] = {}
        self._profiles: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}

    def _purge(self, now: float) -> None:
        if len(self._sessions) % 64 == 0:  # amortised sweep of the long dead
            for digest, (session, idle_until) in list(self._sessions.items()):
                if session.ends_at(idle_until) <= now:
                    self._drop(digest)

    def _drop(self, digest: str) -> bool:
        entry = self._sessions.pop(digest, None)
        if entry is None:
            return False
        key = (entry[0].app_id, entry[0].openid)
        digests = self._by_user.get(key, [])
        if digest in digests:
            digests.remove(digest)
        if not digests:
            self._by_user.pop(key, None)
        return True

    async def create(self, session: Session, max_per_openid: int) -> str:
        now = time.time()
        self._purge(now)
        skey = new_skey()
        digest = skey_digest(skey)
        self._sessions[digest] = (session, now + session.idle_seconds)
        digests = self._by_user.setdefault((session.app_id, session.openid), [])
        digests.append(digest)
        while len(digests) > max_per_openid:
            self._drop(digests[0])
        return skey

    async def resolve(
        self, skey: str, now: float | None = None, app_id: str | None = None
    ) -> tuple[Session, float] | None:
        now = time.time() if now is None else now
        digest = skey_digest(skey)
        entry = self._sessions.get(digest)
        if entry is None or (app_id is not None and entry[0].app_id != app_id):
            return None
        session, idle_until = entry
        if session.ends_at(idle_until) <= now:
            self._drop(digest)
            return None
        idle_until = now + session.idle_seconds
        self._sessions[digest] = (session, idle_until)
        return session, idle_until

    async def revoke(self, skey: str) -> bool:
        return self._drop(skey_digest(skey))

    async def revoke_user(self, app_id: str, openid: str) -> int:
        digests = list(self._by_user.get((app_id, openid), []))
        return sum(self._drop(d) for d in digests)

    async def keep_profile(
        self, app_id: str, openid: str, profile: dict[str, Any], seconds: float
    ) -> None:
        now = time.time()
        if len(self._profiles) % 64 == 0:  # amortised sweep, as for sessions
            for key, (_, until) in list(self._profiles.items()):
                if until <= now:
                    del self._profiles[key]
        self._profiles[(app_id, openid)] = (dict(profile), now + seconds)

    async def profile(self, app_id: str, openid: str) -> dict[str, Any] | None:
        kept = self._profiles.get((app_id, openid))
        if kept is None or kept[1] <= time.time():
            return None
        return dict(kept[0])

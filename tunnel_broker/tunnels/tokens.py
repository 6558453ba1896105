"""Connect tokens: what a tunnel is, signed into the connect URL.

The token carries everything the broker needs to open a tunnel (app, tunnel id, user id,
identity, meta, groups, expiry), so issuing a tunnel writes nothing to any store and a
connect can land on any pod. Each app's tokens are signed with a key derived from the
broker secret *and the app id* (itsdangerous salt), so a token can never be moved to
another app, and expiry is checked separately from the signature so clients can tell
"expired, fetch a new one" (4408) from "invalid" (4401).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from tunnel_broker.errors import TokenError, TokenExpired, TokenInvalid

__all__ = ["ConnectClaims", "TokenCodec", "TokenError", "TokenExpired", "TokenInvalid"]

TOKEN_VERSION = 1
_SALT_PREFIX = "tunnel-broker.connect.v1:"


@dataclass(frozen=True, slots=True)
class ConnectClaims:
    app_id: str
    tunnel_id: str
    user_id: str
    expires_at: float
    identity: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "v": TOKEN_VERSION,
            "a": self.app_id,
            "t": self.tunnel_id,
            "u": self.user_id,
            "e": int(self.expires_at),
        }
        if self.identity:
            payload["i"] = self.identity
        if self.meta:
            payload["m"] = self.meta
        if self.groups:
            payload["g"] = list(self.groups)
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> ConnectClaims:
        if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
            raise TokenInvalid("unsupported token version")
        try:
            app_id, tunnel_id, user_id = payload["a"], payload["t"], payload["u"]
            expires_at = payload["e"]
            identity = payload.get("i", {})
            meta = payload.get("m", {})
            groups = payload.get("g", [])
        except KeyError:
            raise TokenInvalid("token payload incomplete") from None
        if not (
            isinstance(app_id, str)
            and isinstance(tunnel_id, str)
            and isinstance(user_id, str)
            and isinstance(expires_at, int)
            and isinstance(identity, dict)
            and isinstance(meta, dict)
            and isinstance(groups, list)
            and all(isinstance(g, str) for g in groups)
        ):
            raise TokenInvalid("token payload has wrong types")
        return cls(app_id, tunnel_id, user_id, float(expires_at), identity, meta, tuple(groups))


class TokenCodec:
    """Mints and checks connect tokens.

    ``secret_keys`` is oldest-first: the last key signs, all keys verify, so a broker
    secret can be rotated without breaking connect URLs already handed out.
    """

    def __init__(self, secret_keys: list[str]) -> None:
        if not secret_keys or any(len(k) < 16 for k in secret_keys):
            raise ValueError("token secret keys must be at least 16 characters")
        self._keys = list(secret_keys)
        self._serializers: dict[str, URLSafeSerializer] = {}

    def __repr__(self) -> str:
        return f"TokenCodec(keys=<{len(self._keys)} hidden>)"

    def _serializer(self, app_id: str) -> URLSafeSerializer:
        serializer = self._serializers.get(app_id)
        if serializer is None:
            serializer = URLSafeSerializer(self._keys, salt=_SALT_PREFIX + app_id)
            self._serializers[app_id] = serializer
        return serializer

    def mint(self, claims: ConnectClaims) -> str:
        token = self._serializer(claims.app_id).dumps(claims.to_payload())
        return token if isinstance(token, str) else token.decode()

    def peek_app_id(self, token: str) -> str:
        """The app id a token claims, unverified; only used to pick the verifying key."""
        try:
            _, payload = URLSafeSerializer(self._keys).loads_unsafe(token)
        except Exception:  # itsdangerous raises assorted errors on garbage
            raise TokenInvalid("token is malformed") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("a"), str):
            raise TokenInvalid("token is malformed")
        app_id: str = payload["a"]
        return app_id

    def verify(self, token: str, now: float | None = None) -> ConnectClaims:
        """Return the claims of a genuine, unexpired token for the app it names."""
        if not token:
            raise TokenInvalid("token missing")
        app_id = self.peek_app_id(token)
        try:
            payload = self._serializer(app_id).loads(token)
        except BadSignature:
            raise TokenInvalid("token signature invalid") from None
        claims = ConnectClaims.from_payload(payload)
        if claims.expires_at <= (time.time() if now is None else now):
            raise TokenExpired("token expired")
        return claims

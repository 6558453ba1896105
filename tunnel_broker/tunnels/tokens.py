"""Connect tokens: what a tunnel is, signed into the connect URL.

The token carries everything the broker needs to open a tunnel (app, tunnel id, user id,
identity, meta, groups, expiry), so issuing a tunnel writes nothing to any store and a
connect can land on any pod. Each app's tokens are signed with a key derived from the
broker secret *and the app id* (itsdangerous salt), so a token can never be moved to
another app, and expiry is checked separately from the signature so clients can tell
"expired, fetch a new one" (4408) from "invalid" (4401).

A token is ``<app id>~<payload>.<signature>``: the app id is in the clear so that a token
is refused before any work is done for it (too long, an app id that cannot be, an app
this broker does not know), and its payload is plain base64 JSON, never compressed, so
nothing is inflated, ever. Only after the signature is verified is the payload decoded.
Tokens of the earlier format (no ``~``) are refused: clients fetch a new connect URL.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadData, Serializer, Signer
from itsdangerous.encoding import base64_decode, base64_encode

from tunnel_broker.apps import APP_ID_PATTERN
from tunnel_broker.errors import TokenError, TokenExpired, TokenInvalid, UnknownApp

__all__ = [
    "ConnectClaims",
    "TokenCodec",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "UnknownApp",
]

TOKEN_VERSION = 1
_SALT_PREFIX = "tunnel-broker.connect.v1:"
SEPARATOR = "~"
# Connect URLs must stay below 8 KB, the request-line limit of WebSocket handshakes; the
# apps' max_token_claims_bytes is capped so that a minted token always fits.
MAX_TOKEN_CHARS = 7168
_APP_ID = re.compile(APP_ID_PATTERN)
# Serializers of recently used apps; a broker with more apps rebuilds the others'.
_CACHED_SERIALIZERS = 1024


class _KeyKeepingSigner(Signer):
    """itsdangerous' signer, keeping the keys it derives (an HMAC of the secret and the
    app's salt) instead of deriving them again for every token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache_key = secret_key.encode() if isinstance(secret_key, str) else secret_key
        key = self._derived.get(cache_key)
        if key is None:
            key = self._derived[cache_key] = super().derive_key(secret_key)
        return key


class _PlainSerializer(Serializer[str]):
    """itsdangerous' URL-safe serializer without its zlib compression: a payload is
    base64 JSON, and a payload marked compressed is refused rather than inflated.

    It signs and verifies with one signer for its life: itsdangerous builds a new one,
    and derives its keys again, for every token (about 5% of a tunnel's setup, py-spy on
    ``bench/broker_bench.py --memory``)."""

    def __init__(self, secret_keys: list[str], salt: str) -> None:
        super().__init__(secret_keys, salt=salt, signer=_KeyKeepingSigner)
        self._signer = super().make_signer(salt)

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        if salt is None or salt == self.salt:
            return self._signer
        return super().make_signer(salt)

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(super().dump_payload(obj))

    def load_payload(self, payload: bytes, serializer: Any = None) -> Any:
        if payload.startswith(b"."):
            raise TokenInvalid("compressed token payloads are not accepted")
        try:
            decoded = base64_decode(payload)
        except Exception:
            raise TokenInvalid("token payload is not base64") from None
        return super().load_payload(decoded, serializer)


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
        self._serializers: OrderedDict[str, _PlainSerializer] = OrderedDict()

    def __repr__(self) -> str:
        return f"TokenCodec(keys=<{len(self._keys)} hidden>)"

    def _serializer(self, app_id: str) -> _PlainSerializer:
        serializer = self._serializers.get(app_id)
        if serializer is None:
            serializer = _PlainSerializer(self._keys, salt=_SALT_PREFIX + app_id)
            self._serializers[app_id] = serializer
            if len(self._serializers) > _CACHED_SERIALIZERS:
                self._serializers.popitem(last=False)
        else:
            self._serializers.move_to_end(app_id)
        return serializer

    @property
    def cached_serializers(self) -> int:
        return len(self._serializers)

    def mint(self, claims: ConnectClaims) -> str:
        signed = self._serializer(claims.app_id).dumps(claims.to_payload())
        token = claims.app_id + SEPARATOR + signed
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("claims too large for a connect token")
        return token

    @staticmethod
    def app_id_of(token: str) -> str:
        """The app a token names, checked for form only (not for authenticity)."""
        if not token:
            raise TokenInvalid("token missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid("token too long")
        app_id, separator, _ = token.partition(SEPARATOR)
        if not separator or not _APP_ID.fullmatch(app_id):
            raise TokenInvalid("token is malformed")
        return app_id

    def verify(
        self,
        token: str,
        now: float | None = None,
        is_known_app: Callable[[str], bool] | None = None,
    ) -> ConnectClaims:
        """Return the claims of a genuine, unexpired token for the app it names.

        With ``is_known_app``, a token of an app the broker does not know is refused
        (``UnknownApp``) before its signature is even checked."""
        app_id = self.app_id_of(token)
        if is_known_app is not None and not is_known_app(app_id):
            raise UnknownApp("token names an unknown app")
        signed = token[len(app_id) + 1 :]
        try:
            payload = self._serializer(app_id).loads(signed)
        except BadData:  # the signature, or (only for our own keys) the payload
            raise TokenInvalid("token signature invalid") from None
        claims = ConnectClaims.from_payload(payload)
        if claims.app_id != app_id:
            raise TokenInvalid("token payload names another app")
        if claims.expires_at <= (time.time() if now is None else now):
            raise TokenExpired("token expired")
        return claims

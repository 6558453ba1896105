"""Operator keys: who may use the admin API and the operator's console.

They are not app keys: an operator manages every app, so an app's key must never open
the admin API, nor an operator key the app API. ``TB_ADMIN_KEYS`` names each key
(``name:key``), and the name is what the audit log records as "who". Several keys may be
set at once, which is how they are rotated: add the new one, hand it out, remove the old.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from tunnel_broker.errors import ApiError, SettingsError

MIN_OPERATOR_KEY_LENGTH = 32
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_CHALLENGE = {"www-authenticate": 'Bearer realm="admin"'}


class OperatorKeys:
    """Operator names by key, looked up by the key's SHA-256 (the dictionary's timing
    says nothing about the key) and confirmed with a constant-time comparison."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._by_digest: dict[bytes, tuple[str, str]] = {}
        for name, key in pairs:
            self._by_digest[hashlib.sha256(key.encode()).digest()] = (name, key)

    @classmethod
    def parse(cls, raw: str) -> OperatorKeys:
        """``name:key,name:key``; refuses what would be weak or ambiguous, without ever
        printing a key."""
        pairs: list[tuple[str, str]] = []
        names: set[str] = set()
        for index, entry in enumerate(e.strip() for e in raw.split(",")):
            if not entry:
                continue
            name, sep, key = entry.partition(":")
            where = f"TB_ADMIN_KEYS entry {index + 1}"
            if not sep or not _NAME.fullmatch(name):
                raise SettingsError(f"{where}: expected name:key (name of letters, digits, _.@-)")
            if len(key) < MIN_OPERATOR_KEY_LENGTH or any(c.isspace() for c in key):
                raise SettingsError(
                    f"{where} ({name}): keys need at least {MIN_OPERATOR_KEY_LENGTH}"
                    " non-space characters"
                )
            if name in names:
                raise SettingsError(f"{where}: operator name {name!r} appears twice")
            names.add(name)
            pairs.append((name, key))
        return cls(pairs)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def operator(self, key: str) -> str | None:
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        if found is None:
            return None
        name, expected = found
        return name if hmac.compare_digest(expected.encode(), key.encode()) else None

    def authenticate(self, authorization: str) -> str:
        """The operator an ``Authorization`` header names, or the problem to answer."""
        if not self.enabled:
            raise ApiError(
                "admin_api_disabled", "this broker has no operator keys (set TB_ADMIN_KEYS)"
            )
        scheme, _, key = authorization.partition(" ")
        if not authorization:
            raise ApiError(
                "missing_admin_key",
                "send 'Authorization: Bearer <operator key>'",
                headers=_CHALLENGE,
            )
        name = self.operator(key.strip()) if scheme.lower() == "bearer" else None
        if name is None:
            raise ApiError("invalid_admin_key", "no operator has this key", headers=_CHALLENGE)
        return name

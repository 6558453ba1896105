"""Verifying Standard Webhooks signatures (https://www.standardwebhooks.com).

The broker signs ``f"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256 under every
configured secret and lists all signatures in ``webhook-signature``, so a receiver holding any
one current secret accepts the request while secrets rotate. The timestamp bounds replays to
the tolerance window (5 minutes either way by default); comparisons are constant-time so the
check leaks nothing about the expected signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

from business_sdk._exceptions import InvalidSecretError, WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
DEFAULT_TOLERANCE = timedelta(minutes=5)


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret (the prefix is optional, as in other Standard
    Webhooks libraries). The error never contains the secret."""
    if not isinstance(secret, str):
        raise InvalidSecretError(f"webhook secrets are strings, not {type(secret).__name__}")
    encoded = secret.removeprefix(SECRET_PREFIX).strip()
    try:
        # Tolerate missing padding: some tools print base64 without it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecretError("a webhook secret is not base64 after 'whsec_'") from None
    if not key:
        raise InvalidSecretError("a webhook secret is empty")
    return key


class Headers(Protocol):
    """Any header map: Starlette ``Headers``, werkzeug ``Headers``, Django ``HttpHeaders``, or a
    plain ``dict`` (looked up case-insensitively as a fallback)."""

    def get(self, key: str, /) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def _header(headers: Headers, name: str) -> str:
    """Case-insensitive lookup: framework header maps already are, a plain dict may not be."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a header; other versions are for other verifiers."""
    found: list[bytes] = []
    for item in header.split():
        version, _, encoded = item.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


class WebhookVerifier:
    """Checks that a webhook request comes from the broker, is unaltered and is recent.

    ``secrets`` are every secret currently valid for the app (old and new during a rotation).
    """

    __slots__ = ("_keys", "_tolerance")

    def __init__(
        self, secrets: str | Iterable[str], *, tolerance: float | timedelta = DEFAULT_TOLERANCE
    ) -> None:
        secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
        if not secret_list:
            raise InvalidSecretError("at least one webhook secret is required")
        self._keys = [decode_secret(s) for s in secret_list]
        seconds = tolerance.total_seconds() if isinstance(tolerance, timedelta) else tolerance
        if seconds < 0:
            raise ValueError("tolerance must not be negative")
        self._tolerance = float(seconds)

    def __repr__(self) -> str:
        return f"WebhookVerifier(secrets=<{len(self._keys)} hidden>, tolerance={self._tolerance})"

    def verify(self, headers: Headers, body: bytes, *, now: float | None = None) -> str:
        """Raise ``WebhookVerificationError`` unless the request is authentic and recent;
        return its ``webhook-id`` (stable across redeliveries, usable for de-duplication).

        ``body`` must be the raw bytes as received: re-serialised JSON will not match.
        """
        msg_id = _header(headers, "webhook-id")
        timestamp_text = _header(headers, "webhook-timestamp")
        signature_header = _header(headers, "webhook-signature")
        try:
            timestamp = int(timestamp_text)
        except ValueError:
            raise WebhookVerificationError("webhook-timestamp is not an integer") from None
        current = time.time() if now is None else now
        if timestamp < current - self._tolerance:
            raise WebhookVerificationError("webhook-timestamp is too old")
        if timestamp > current + self._tolerance:
            raise WebhookVerificationError("webhook-timestamp is too far in the future")
        candidates = _signatures(signature_header)
        if not candidates:
            raise WebhookVerificationError("webhook-signature has no v1 signature")
        signed = f"{msg_id}.{timestamp_text}.".encode() + body
        # Every pair is compared, with no early exit per key, so timing does not reveal which
        # secret (if any) nearly matched.
        matched = False
        for key in self._keys:
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            for candidate in candidates:
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise WebhookVerificationError("no signature matches the configured secrets")
        return msg_id

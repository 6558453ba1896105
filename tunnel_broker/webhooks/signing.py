"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure and I/O-free.

Wafer signed webhooks with ``sha1(data + secret)``: no HMAC, no timestamp, so any captured
webhook could be replayed forever. Here every request carries ``webhook-id``,
``webhook-timestamp`` and one ``v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`` per
configured secret, so receivers can rotate keys and reject replays with any off-the-shelf
Standard Webhooks verifier.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from tunnel_broker.errors import BrokerError, ConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MIN_SECRET_BYTES = 24
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSecret(ConfigError):
    """A webhook secret is not ``whsec_`` + base64 of at least 24 bytes."""


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key of a ``whsec_`` secret; the error never echoes the secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("webhook secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("webhook secret is not valid base64 after 'whsec_'") from None
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidSecret(f"webhook secret must encode at least {MIN_SECRET_BYTES} bytes")
    return key


def _signature(key: bytes | hmac.HMAC, msg_id: str, timestamp: int, body: bytes) -> str:
    """``key`` may be a keyed HMAC prepared once; copying it skips the key setup."""
    mac = key.copy() if isinstance(key, hmac.HMAC) else hmac.new(key, digestmod=hashlib.sha256)
    mac.update(b"%s.%d." % (msg_id.encode(), timestamp))
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


class WebhookSigner:
    """Signs with every key at once, so receivers holding either the old or the new
    secret accept a request during rotation."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise InvalidSecret("at least one webhook secret is required")
        self._keys = [hmac.new(decode_secret(s), digestmod=hashlib.sha256) for s in secrets]

    def __repr__(self) -> str:
        return f"WebhookSigner(keys=<{len(self._keys)} hidden>)"

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        signatures = " ".join(_signature(k, msg_id, timestamp, body) for k in self._keys)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }


class SignatureError(BrokerError):
    """Verification failed; the message says why without revealing any key."""


def verify(
    secrets: list[str],
    headers: dict[str, str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check a signed request; raise ``SignatureError`` unless a signature matches.

    The broker itself only signs; this verifier exists for the tests and tooling that
    check the broker's output, and for receivers written in Python without the SDK.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        ts_text = lowered["webhook-timestamp"]
        sig_header = lowered["webhook-signature"]
    except KeyError as exc:
        raise SignatureError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp outside the tolerance window")
    candidates = [s for s in sig_header.split(" ") if s.startswith("v1,")]
    for key in (decode_secret(s) for s in secrets):
        expected = _signature(key, msg_id, timestamp, body)
        for candidate in candidates:
            if hmac.compare_digest(expected.encode(), candidate.encode()):
                return
    raise SignatureError("no matching signature")

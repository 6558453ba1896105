"""The legacy signed envelope between a Wafer business server and the tunnel service.

Requests are ``{"data": <JSON text>, "tcId": md5(host), "tcKey"?, "signature":
sha1(data + key)}``; answers ``{"code": 0, "data": ..., "signature"?}`` or ``{"code": N,
"message": ...}``. The scheme is weak (no HMAC, no timestamp, replayable, and
wafer-node-sdk sends the key itself in ``tcKey``): it is accepted only on the Wafer
endpoints of an app that opted in (docs/security.md), and checked as strictly as it
allows: the signature over the ``data`` text exactly as received, compared in constant
time against each of the app's keys, from a business server (``tcId``) the app lists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Answer codes of the Wafer endpoints (``code`` in the body; 0 is success). The real
# service's codes were never published; these are the broker's, documented.
OK = 0
BAD_REQUEST = 4000  # the body is not the envelope
UNKNOWN_SERVER = 4001  # tcId is not one of the app's business servers
BAD_SIGNATURE = 4002
BAD_DATA = 4003  # data is not the JSON this endpoint takes
NOT_WAFER_APP = 4004  # no such app, or it is not in Wafer mode
TOO_LARGE = 4013
RATE_LIMITED = 4029  # the app's API budget is spent; retry later
UNAVAILABLE = 5003  # the broker cannot serve it now (its shared state is unreachable)


class EnvelopeError(Exception):
    """A request refused; ``code`` and ``message`` go back in the legacy shape."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def tc_id(host: str) -> str:
    """A business server's ``tcId``: lowercase hex md5 of its host, as the SDKs send."""
    return hashlib.md5(host.encode()).hexdigest()  # noqa: S324 - the protocol's, not ours


def sign(data: str, key: str) -> str:
    return hashlib.sha1((data + key).encode()).hexdigest()  # noqa: S324 - the protocol's


def signed_by(data: str, signature: str, keys: Sequence[str]) -> bool:
    """Whether ``signature`` is ``sha1(data + key)`` for one of ``keys`` (constant time
    for each; all are tried, so the time says nothing about which)."""
    given = signature.lower().encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(sign(data, key).encode(), given)
    return found


@dataclass(frozen=True, slots=True)
class SignedRequest:
    data: str  # the text as received: what the signature covers
    value: Any  # ``data`` decoded
    tc_id: str


def open_request(body: bytes, keys: Sequence[str], tc_ids: frozenset[str]) -> SignedRequest:
    """The verified request in ``body``; ``EnvelopeError`` otherwise (never echoing a
    key, a signature or the data)."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError(BAD_REQUEST, "body is not JSON") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError(BAD_REQUEST, "body is not a JSON object")
    data, tc, signature = envelope.get("data"), envelope.get("tcId"), envelope.get("signature")
    for name, value in (("data", data), ("tcId", tc), ("signature", signature)):
        if not isinstance(value, str):
            raise EnvelopeError(BAD_REQUEST, f"'{name}' must be a string")
    assert isinstance(data, str) and isinstance(tc, str) and isinstance(signature, str)
    if tc.lower() not in tc_ids:
        raise EnvelopeError(UNKNOWN_SERVER, "tcId is not a business server of this app")
    if not signed_by(data, signature, keys):
        raise EnvelopeError(BAD_SIGNATURE, "signature does not match data")
    try:
        value = json.loads(data)
    except ValueError:
        raise EnvelopeError(BAD_DATA, "data is not JSON") from None
    return SignedRequest(data, value, tc.lower())


def answer(data: Any = None, key: str | None = None) -> dict[str, Any]:
    """A success answer; with ``key``, ``data`` goes as JSON text with its signature
    (what ``/get/wsurl``'s callers parse and, in qcloud's SDK, verify)."""
    if key is None:
        return {"code": OK, "message": "ok", "data": data if data is not None else {}}
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return {"code": OK, "message": "ok", "data": text, "signature": sign(text, key)}


def refusal(error: EnvelopeError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message}

"""WeChat's user-data cryptography: rawData signatures and encryptedData. Pure, no I/O.

WeChat fixes both schemes; we only implement them carefully:

- ``signature = sha1(rawData + session_key)`` as lowercase hex, where ``session_key`` is the
  base64 text jscode2session returned. Compared in constant time.
- ``encryptedData`` is AES-128-CBC with PKCS#7 padding, key = b64decode(session_key),
  iv = b64decode(iv); the plaintext is a JSON object whose ``watermark.appid`` names the app.

AES-CBC carries no MAC, so WeChat's scheme cannot detect every tampering: flipping bits of the
iv flips the same bits of the first 16 plaintext bytes, which for user info is
``{"openId":"oXXXX``. Take the user's identity from jscode2session, never from encryptedData,
and pass ``expected_openid`` when decrypting user info so such a flip is caught.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tunnel_broker.wechat.errors import (
    DecryptionFailed,
    InvalidSignature,
    MalformedUserData,
    OpenIdMismatch,
    WatermarkMismatch,
)

KEY_BYTES = 16
BLOCK_BYTES = 16


class EncryptedUserData(NamedTuple):
    """What the mini-program receives: both fields are standard base64."""

    encrypted_data: str
    iv: str


def sign_raw_data(raw_data: str, session_key: str) -> str:
    """WeChat's rawData signature: hex sha1 of rawData followed by the session_key text."""
    digest = hashlib.sha1((raw_data + session_key).encode("utf-8"))  # noqa: S324 - WeChat's scheme
    return digest.hexdigest()


def check_raw_data_signature(raw_data: str, signature: str, session_key: str) -> bool:
    """True if ``signature`` is rawData's signature under ``session_key`` (constant time)."""
    expected = sign_raw_data(raw_data, session_key).encode("ascii")
    return hmac.compare_digest(expected, signature.lower().encode("utf-8"))


def verify_raw_data(raw_data: str, signature: str, session_key: str) -> dict[str, Any]:
    """The user info in rawData, once its signature is checked.

    Raises ``InvalidSignature``, or ``MalformedUserData`` if the signed text is not an object.
    """
    if not check_raw_data_signature(raw_data, signature, session_key):
        raise InvalidSignature
    try:
        user_info = json.loads(raw_data)
    except (ValueError, RecursionError):
        raise MalformedUserData from None
    if not isinstance(user_info, dict):
        raise MalformedUserData
    return user_info


def decrypt_user_data(
    encrypted_data_b64: str,
    iv_b64: str,
    session_key_b64: str,
    expected_appid: str,
    *,
    expected_openid: str | None = None,
) -> dict[str, Any]:
    """Decrypt encryptedData and check its watermark (and openId, if expected_openid is given).

    Raises ``DecryptionFailed`` (bad base64, key or iv size, ciphertext length, padding,
    UTF-8 or JSON), ``WatermarkMismatch`` or ``OpenIdMismatch``.
    """
    key = _b64decode_exact(session_key_b64, KEY_BYTES, "session_key")
    iv = _b64decode_exact(iv_b64, BLOCK_BYTES, "iv")
    ciphertext = _b64decode(encrypted_data_b64, "encryptedData")
    if not ciphertext or len(ciphertext) % BLOCK_BYTES:
        raise DecryptionFailed("encryptedData is not a whole number of AES blocks")

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_BYTES * 8).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed("invalid PKCS#7 padding") from None
    try:
        data = json.loads(plaintext.decode("utf-8"))
    except (ValueError, RecursionError):
        raise DecryptionFailed("plaintext is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise DecryptionFailed("plaintext is not a JSON object")

    watermark = data.get("watermark")
    if not isinstance(watermark, dict) or watermark.get("appid") != expected_appid:
        raise WatermarkMismatch(expected_appid)
    if expected_openid is not None and data.get("openId") != expected_openid:
        raise OpenIdMismatch
    return data


def encrypt_user_data(
    user_data: Mapping[str, Any],
    session_key_b64: str,
    appid: str,
    *,
    timestamp: int,
    iv: bytes | None = None,
) -> EncryptedUserData:
    """Encrypt user data the way WeChat does, adding ``watermark: {appid, timestamp}``.

    The inverse of ``decrypt_user_data``, for the simulator and tests. ``iv`` defaults to 16
    random bytes. Raises ``ValueError`` for a session_key or iv of the wrong size.
    """
    key = base64.b64decode(session_key_b64, validate=True)
    if len(key) != KEY_BYTES:
        raise ValueError("session_key must be 16 bytes in base64")
    iv = os.urandom(BLOCK_BYTES) if iv is None else iv
    if len(iv) != BLOCK_BYTES:
        raise ValueError("iv must be 16 bytes")

    payload = {**user_data, "watermark": {"appid": appid, "timestamp": timestamp}}
    plaintext = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    padder = padding.PKCS7(BLOCK_BYTES * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return EncryptedUserData(
        encrypted_data=base64.b64encode(ciphertext).decode("ascii"),
        iv=base64.b64encode(iv).decode("ascii"),
    )


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionFailed(f"{what} is not valid base64") from None


def _b64decode_exact(value: str, length: int, what: str) -> bytes:
    decoded = _b64decode(value, what)
    if len(decoded) != length:
        raise DecryptionFailed(f"{what} is not {length} bytes")
    return decoded

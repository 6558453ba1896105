"""rawData signatures and encryptedData, driven without any network."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tunnel_broker.wechat import (
    DecryptionFailed,
    InvalidSignature,
    MalformedUserData,
    OpenIdMismatch,
    UserDataError,
    WatermarkMismatch,
    check_raw_data_signature,
    decrypt_user_data,
    encrypt_user_data,
    sign_raw_data,
    verify_raw_data,
)

APPID = "wx0123456789abcdef"
TIMESTAMP = 1_700_000_000

session_keys = st.binary(min_size=16, max_size=16).map(lambda k: base64.b64encode(k).decode())
ivs = st.binary(min_size=16, max_size=16)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)
user_data = st.dictionaries(st.text().filter(lambda key: key != "watermark"), json_values)
openids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
profiles = st.fixed_dictionaries(
    {"nickName": st.text(), "gender": st.integers(0, 2), "city": st.text()}
)

TAMPER_ERRORS = (DecryptionFailed, WatermarkMismatch)


def user_info(openid: str, profile: dict[str, Any]) -> dict[str, Any]:
    """WeChat's layout: openId first, so the first AES block holds ``{"openId":"oXXXX``."""
    return {"openId": "o" + openid.ljust(27, "x")[:27], **profile}


def aes_cbc_encrypt_raw(plaintext: bytes, session_key: str, iv: bytes) -> str:
    """Encrypt already padded bytes, for building ciphertexts with chosen (bad) padding."""
    key = base64.b64decode(session_key)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(encryptor.update(plaintext) + encryptor.finalize()).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# rawData signatures


def test_signature_is_sha1_of_raw_data_then_session_key() -> None:
    raw_data = '{"nickName":"Band","gender":1,"language":"zh_CN"}'
    session_key = "HyVFkGl5F5OQWJZZaNzBBg=="
    expected = hashlib.sha1((raw_data + session_key).encode()).hexdigest()
    assert sign_raw_data(raw_data, session_key) == expected
    assert check_raw_data_signature(raw_data, expected, session_key)
    assert check_raw_data_signature(raw_data, expected.upper(), session_key)


def test_signature_covers_utf8_of_non_ascii_raw_data() -> None:
    raw_data = json.dumps({"nickName": "小明"}, ensure_ascii=False)
    session_key = b64(os.urandom(16))
    signature = hashlib.sha1((raw_data + session_key).encode("utf-8")).hexdigest()
    assert check_raw_data_signature(raw_data, signature, session_key)


@settings(deadline=None)
@given(raw_data=st.text(), session_key=session_keys, other=st.text())
def test_signature_check_accepts_only_the_signature(
    raw_data: str, session_key: str, other: str
) -> None:
    signature = sign_raw_data(raw_data, session_key)
    assert check_raw_data_signature(raw_data, signature, session_key)
    assume(other.lower() != signature)
    assert not check_raw_data_signature(raw_data, other, session_key)


@settings(deadline=None)
@given(raw_data=st.text(), session_key=session_keys, other_key=session_keys)
def test_signature_from_another_session_key_is_rejected(
    raw_data: str, session_key: str, other_key: str
) -> None:
    assume(other_key != session_key)
    signature = sign_raw_data(raw_data, other_key)
    assert not check_raw_data_signature(raw_data, signature, session_key)


@settings(deadline=None)
@given(raw_data=st.text(min_size=1), session_key=session_keys, data=st.data())
def test_signature_of_altered_raw_data_is_rejected(
    raw_data: str, session_key: str, data: st.DataObject
) -> None:
    signature = sign_raw_data(raw_data, session_key)
    altered = data.draw(st.text().filter(lambda text: text != raw_data))
    assert not check_raw_data_signature(altered, signature, session_key)


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    assert not check_raw_data_signature("{}", "签名", b64(os.urandom(16)))


def test_verify_raw_data_returns_the_user_info() -> None:
    session_key = b64(os.urandom(16))
    raw_data = '{"nickName":"alice","gender":2}'
    user = verify_raw_data(raw_data, sign_raw_data(raw_data, session_key), session_key)
    assert user == {"nickName": "alice", "gender": 2}


def test_verify_raw_data_rejects_a_bad_signature_without_revealing_the_key() -> None:
    session_key = b64(os.urandom(16))
    with pytest.raises(InvalidSignature) as caught:
        verify_raw_data('{"nickName":"alice"}', "0" * 40, session_key)
    assert session_key not in str(caught.value)
    assert "alice" not in str(caught.value)


@pytest.mark.parametrize("raw_data", ["[1, 2]", "not json", '"text"'])
def test_verify_raw_data_rejects_signed_text_that_is_not_an_object(raw_data: str) -> None:
    session_key = b64(os.urandom(16))
    with pytest.raises(MalformedUserData):
        verify_raw_data(raw_data, sign_raw_data(raw_data, session_key), session_key)


# encryptedData round trip


@settings(deadline=None)
@given(data=user_data, session_key=session_keys, iv=ivs, timestamp=st.integers(0, 2**40))
def test_decrypt_inverts_encrypt_and_adds_the_watermark(
    data: dict[str, Any], session_key: str, iv: bytes, timestamp: int
) -> None:
    encrypted = encrypt_user_data(data, session_key, APPID, timestamp=timestamp, iv=iv)
    assert encrypted.iv == b64(iv)
    decrypted = decrypt_user_data(encrypted.encrypted_data, encrypted.iv, session_key, APPID)
    assert decrypted == {**data, "watermark": {"appid": APPID, "timestamp": timestamp}}


def test_known_vector_matches_an_independent_aes_implementation() -> None:
    session_key = b64(bytes(range(16)))
    iv = bytes(range(16, 32))
    encrypted = encrypt_user_data({"openId": "oABC"}, session_key, APPID, timestamp=1, iv=iv)
    plaintext = b'{"openId":"oABC","watermark":{"appid":"wx0123456789abcdef","timestamp":1}}'
    pad = 16 - len(plaintext) % 16
    expected = aes_cbc_encrypt_raw(plaintext + bytes([pad]) * pad, session_key, iv)
    assert encrypted.encrypted_data == expected


def test_decrypt_rejects_data_watermarked_for_another_app() -> None:
    session_key = b64(os.urandom(16))
    encrypted = encrypt_user_data({"openId": "o1"}, session_key, "wxother", timestamp=TIMESTAMP)
    with pytest.raises(WatermarkMismatch):
        decrypt_user_data(encrypted.encrypted_data, encrypted.iv, session_key, APPID)


@pytest.mark.parametrize(
    "plaintext",
    [b'{"openId":"o1"}', b'{"watermark":"wx0123456789abcdef"}', b'{"watermark":{"appid":1}}'],
)
def test_decrypt_rejects_data_without_a_proper_watermark(plaintext: bytes) -> None:
    session_key = b64(os.urandom(16))
    iv = os.urandom(16)
    pad = 16 - len(plaintext) % 16
    ciphertext = aes_cbc_encrypt_raw(plaintext + bytes([pad]) * pad, session_key, iv)
    with pytest.raises(WatermarkMismatch):
        decrypt_user_data(ciphertext, b64(iv), session_key, APPID)


@pytest.mark.parametrize(
    "plaintext", [b"[1,2,3]", b"not json at all", b'{"a":\xff\xfe}', b"[" * 100_000]
)
def test_decrypt_rejects_plaintext_that_is_not_a_json_object(plaintext: bytes) -> None:
    session_key = b64(os.urandom(16))
    iv = os.urandom(16)
    pad = 16 - len(plaintext) % 16
    ciphertext = aes_cbc_encrypt_raw(plaintext + bytes([pad]) * pad, session_key, iv)
    with pytest.raises(DecryptionFailed):
        decrypt_user_data(ciphertext, b64(iv), session_key, APPID)


def test_decrypt_checks_the_openid_when_asked() -> None:
    session_key = b64(os.urandom(16))
    encrypted = encrypt_user_data({"openId": "oALICE"}, session_key, APPID, timestamp=TIMESTAMP)
    args = (encrypted.encrypted_data, encrypted.iv, session_key, APPID)
    assert decrypt_user_data(*args, expected_openid="oALICE")["openId"] == "oALICE"
    with pytest.raises(OpenIdMismatch):
        decrypt_user_data(*args, expected_openid="oBOB")


@pytest.mark.parametrize(
    ("session_key", "iv"),
    [
        (b64(os.urandom(15)), b64(os.urandom(16))),
        (b64(os.urandom(32)), b64(os.urandom(16))),
        ("not base64!", b64(os.urandom(16))),
        (b64(os.urandom(16)), b64(os.urandom(12))),
        (b64(os.urandom(16)), "%%%%"),
        (b64(os.urandom(16)), "ÄÖÜ"),
    ],
)
def test_decrypt_rejects_keys_and_ivs_of_the_wrong_size_or_encoding(
    session_key: str, iv: str
) -> None:
    with pytest.raises(DecryptionFailed):
        decrypt_user_data(b64(os.urandom(32)), iv, session_key, APPID)


@pytest.mark.parametrize("ciphertext", [b"", os.urandom(15), os.urandom(33)])
def test_decrypt_rejects_ciphertext_that_is_not_whole_blocks(ciphertext: bytes) -> None:
    with pytest.raises(DecryptionFailed, match="could not be decrypted") as caught:
        decrypt_user_data(b64(ciphertext), b64(os.urandom(16)), b64(os.urandom(16)), APPID)
    assert caught.value.reason == "encryptedData is not a whole number of AES blocks"


def test_every_decryption_failure_has_the_same_message() -> None:
    """A login endpoint that echoes the message must not tell padding errors from others."""
    session_key = b64(os.urandom(16))
    bad_padding = aes_cbc_encrypt_raw(b"{}" + bytes(14), session_key, bytes(16))
    bad_json = aes_cbc_encrypt_raw(b"nope" + bytes([12]) * 12, session_key, bytes(16))
    messages = set()
    reasons = set()
    for ciphertext in (bad_padding, bad_json, b64(bytes(5))):
        with pytest.raises(DecryptionFailed) as caught:
            decrypt_user_data(ciphertext, b64(bytes(16)), session_key, APPID)
        messages.add(str(caught.value))
        reasons.add(caught.value.reason)
    assert len(messages) == 1
    assert len(reasons) == 3


def test_encrypt_refuses_bad_key_or_iv_sizes() -> None:
    with pytest.raises(ValueError, match="session_key"):
        encrypt_user_data({}, b64(bytes(8)), APPID, timestamp=TIMESTAMP)
    with pytest.raises(ValueError, match="iv"):
        encrypt_user_data({}, b64(bytes(16)), APPID, timestamp=TIMESTAMP, iv=bytes(8))


# tampering


def assert_safe_failure(error: UserDataError, session_key: str) -> None:
    assert session_key not in str(error)
    assert str(error) in {
        "encryptedData could not be decrypted with this session_key",
        f"decrypted data's watermark.appid is not {APPID!r}",
        "decrypted data's openId is not the openid of this session",
    }


@settings(deadline=None)
@given(
    data=user_data,
    session_key=session_keys,
    iv=ivs,
    bit=st.integers(min_value=0),
)
def test_any_flipped_ciphertext_bit_is_detected(
    data: dict[str, Any], session_key: str, iv: bytes, bit: int
) -> None:
    """Flipping a ciphertext bit garbles a whole 16-byte plaintext block (or the padding).

    Garbage that still parses as JSON with the right watermark needs 16 random bytes to form
    valid UTF-8 string content: below 1e-6 per example, so this property holds in practice.
    """
    encrypted = encrypt_user_data(data, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    ciphertext = bytearray(base64.b64decode(encrypted.encrypted_data))
    bit %= len(ciphertext) * 8
    ciphertext[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(TAMPER_ERRORS) as caught:
        decrypt_user_data(b64(bytes(ciphertext)), encrypted.iv, session_key, APPID)
    assert_safe_failure(caught.value, session_key)


@settings(deadline=None)
@given(
    data=user_data,
    session_key=session_keys,
    iv=ivs,
    cut=st.integers(min_value=1),
    from_start=st.booleans(),
)
def test_truncated_ciphertext_is_detected(
    data: dict[str, Any], session_key: str, iv: bytes, cut: int, from_start: bool
) -> None:
    encrypted = encrypt_user_data(data, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    ciphertext = base64.b64decode(encrypted.encrypted_data)
    cut %= len(ciphertext)
    cut = cut or 1
    truncated = ciphertext[cut:] if from_start else ciphertext[:-cut]
    with pytest.raises(TAMPER_ERRORS) as caught:
        decrypt_user_data(b64(truncated), encrypted.iv, session_key, APPID)
    assert_safe_failure(caught.value, session_key)


@settings(deadline=None)
@given(data=user_data, session_key=session_keys, iv=ivs, extra=st.binary(min_size=1))
def test_extended_ciphertext_is_detected(
    data: dict[str, Any], session_key: str, iv: bytes, extra: bytes
) -> None:
    encrypted = encrypt_user_data(data, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    extended = base64.b64decode(encrypted.encrypted_data) + extra
    with pytest.raises(TAMPER_ERRORS) as caught:
        decrypt_user_data(b64(extended), encrypted.iv, session_key, APPID)
    assert_safe_failure(caught.value, session_key)


@settings(deadline=None)
@given(data=user_data, session_key=session_keys, other_key=session_keys, iv=ivs)
def test_decrypting_with_another_session_key_fails(
    data: dict[str, Any], session_key: str, other_key: str, iv: bytes
) -> None:
    assume(other_key != session_key)
    encrypted = encrypt_user_data(data, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    with pytest.raises(TAMPER_ERRORS) as caught:
        decrypt_user_data(encrypted.encrypted_data, encrypted.iv, other_key, APPID)
    assert_safe_failure(caught.value, other_key)


@settings(deadline=None)
@given(
    openid=openids,
    profile=profiles,
    session_key=session_keys,
    iv=ivs,
    mask=st.binary(min_size=16, max_size=16).filter(any),
)
def test_any_iv_tampering_of_user_info_is_detected_when_the_openid_is_checked(
    openid: str, profile: dict[str, Any], session_key: str, iv: bytes, mask: bytes
) -> None:
    """With WeChat's layout, the iv-malleable first block is ``{"openId":"oXXXX``.

    Any change to it breaks the JSON, renames the key or alters the openid; none of these
    gets past ``expected_openid``, so no tampered user info is ever returned.
    """
    info = user_info(openid, profile)
    encrypted = encrypt_user_data(info, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    tampered_iv = bytes(a ^ b for a, b in zip(iv, mask, strict=True))
    with pytest.raises((*TAMPER_ERRORS, OpenIdMismatch)) as caught:
        decrypt_user_data(
            encrypted.encrypted_data,
            b64(tampered_iv),
            session_key,
            APPID,
            expected_openid=info["openId"],
        )
    assert_safe_failure(caught.value, session_key)


def test_iv_tampering_alone_can_alter_the_first_block_which_is_why_openid_is_checked() -> None:
    """AES-CBC has no MAC: xor-ing the iv xors the first plaintext block. WeChat's scheme
    cannot detect this; only checking the openId against jscode2session's catches it."""
    session_key = b64(os.urandom(16))
    iv = os.urandom(16)
    info = {"openId": "oAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nickName": "alice"}
    encrypted = encrypt_user_data(info, session_key, APPID, timestamp=TIMESTAMP, iv=iv)
    position = len('{"openId":"o')  # the first "A" of the openid, inside block one
    mask = bytearray(16)
    mask[position] = ord("A") ^ ord("B")
    tampered_iv = b64(bytes(a ^ b for a, b in zip(iv, mask, strict=True)))

    forged = decrypt_user_data(encrypted.encrypted_data, tampered_iv, session_key, APPID)
    assert forged["openId"] == "oBAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(OpenIdMismatch):
        decrypt_user_data(
            encrypted.encrypted_data,
            tampered_iv,
            session_key,
            APPID,
            expected_openid=info["openId"],
        )


@st.composite
def inconsistent_paddings(draw: st.DrawFn) -> bytes:
    """The right count in the last byte, but a different byte within the padded run."""
    count = draw(st.integers(2, 16))
    odd_byte = draw(st.integers(0, 255).filter(lambda byte: byte != count))
    position = draw(st.integers(0, count - 2))
    padding = bytearray([count] * count)
    padding[position] = odd_byte
    return bytes(padding)


bad_paddings = st.one_of(
    st.just(b"\x00"),
    st.integers(17, 255).map(lambda n: bytes([n])),
    inconsistent_paddings(),
)


@settings(deadline=None)
@given(
    data=user_data,
    session_key=session_keys,
    iv=ivs,
    padding=bad_paddings,
    filler=st.binary(max_size=15),
)
def test_invalid_pkcs7_padding_is_rejected(
    data: dict[str, Any],
    session_key: str,
    iv: bytes,
    padding: bytes,
    filler: bytes,
) -> None:
    payload = {**data, "watermark": {"appid": APPID, "timestamp": TIMESTAMP}}
    plaintext = json.dumps(payload).encode()
    # Pad so that the bad padding ends a whole number of blocks.
    body = plaintext + filler
    body += b" " * (-(len(body) + len(padding)) % 16)
    ciphertext = aes_cbc_encrypt_raw(body + padding, session_key, iv)
    with pytest.raises(DecryptionFailed) as caught:
        decrypt_user_data(ciphertext, b64(iv), session_key, APPID)
    assert caught.value.reason == "invalid PKCS#7 padding"


@settings(deadline=None)
@given(encrypted_data=st.text(), iv=st.text(), session_key=st.text(), appid=st.text())
def test_arbitrary_inputs_fail_only_with_user_data_errors(
    encrypted_data: str, iv: str, session_key: str, appid: str
) -> None:
    with pytest.raises(UserDataError):
        decrypt_user_data(encrypted_data, iv, session_key, appid)

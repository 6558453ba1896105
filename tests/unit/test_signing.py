from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tunnel_broker.webhooks.signing import (
    InvalidSecret,
    SignatureError,
    WebhookSigner,
    decode_secret,
    verify,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()


json_bodies = st.dictionaries(
    st.text(max_size=10), st.text(max_size=50) | st.integers(), max_size=8
).map(lambda d: json.dumps(d, ensure_ascii=False).encode())


@given(
    body=json_bodies,
    msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
)
def test_standardwebhooks_library_accepts_our_signatures(body: bytes, msg_id: str) -> None:
    ts = int(time.time())
    headers = WebhookSigner([SECRET]).headers(msg_id, ts, body)
    Webhook(SECRET).verify(body, headers)
    verify([SECRET], headers, body, now=ts)


def test_rotation_signs_with_every_secret() -> None:
    ts = int(time.time())
    headers = WebhookSigner([OTHER, SECRET]).headers("msg_1", ts, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(b"{}", headers)
    Webhook(OTHER).verify(b"{}", headers)


def test_tampered_body_wrong_secret_and_stale_timestamp_fail() -> None:
    ts = int(time.time())
    headers = WebhookSigner([SECRET]).headers("msg_1", ts, b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(b'{"a":1}', headers)
    with pytest.raises(SignatureError):
        verify([SECRET], headers, b'{"a":2}', now=ts)
    with pytest.raises(SignatureError, match="tolerance"):
        verify([SECRET], headers, b'{"a":1}', now=ts + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify([SECRET], {}, b"", now=ts)


@pytest.mark.parametrize(
    "secret", ["nope", "whsec_", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_bad_secrets_are_refused_without_echo(secret: str) -> None:
    with pytest.raises(InvalidSecret) as info:
        decode_secret(secret)
    if len(secret) > 6:
        assert secret[6:] not in str(info.value)


def test_signer_repr_hides_keys() -> None:
    assert "k" * 8 not in repr(WebhookSigner([SECRET]))

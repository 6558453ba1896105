"""Webhook verification accepts exactly what a Standard Webhooks signer produces for a current
secret, within the replay window, and nothing else.

Requests are signed with the ``standardwebhooks`` package, an implementation independent of
ours, so a shared misunderstanding of the scheme cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from business_sdk import InvalidSecretError, WebhookVerificationError, WebhookVerifier

BODY = b'{"events":[{"id":"evt_1","type":"tunnel.connected","nick":"\xe5\xb0\x8f\xe6\x98\x8e"}]}'


def test_a_request_signed_with_the_secret_is_accepted(secret: str, sign: Any) -> None:
    headers = sign(BODY, secret, msg_id="msg_abc")
    assert WebhookVerifier([secret]).verify(headers, BODY) == "msg_abc"


def test_during_rotation_either_secret_on_either_side_verifies(
    make_secret: Callable[[], str], sign: Any
) -> None:
    old, new = make_secret(), make_secret()
    # The broker lists a signature per configured secret.
    headers = sign(BODY, new, old)
    WebhookVerifier([old]).verify(headers, BODY)
    WebhookVerifier([new]).verify(headers, BODY)
    # A receiver holding both accepts a broker that still signs with the old one only.
    WebhookVerifier([new, old]).verify(sign(BODY, old), BODY)


def test_a_wrong_secret_is_refused(make_secret: Callable[[], str], sign: Any) -> None:
    headers = sign(BODY, make_secret())
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        WebhookVerifier([make_secret(), make_secret()]).verify(headers, BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.replace(b"connected", b"closed"),
        lambda b: b + b" ",
        lambda b: b[:-1],
        lambda b: b"",
    ],
)
def test_a_tampered_body_is_refused(
    secret: str, sign: Any, tamper: Callable[[bytes], bytes]
) -> None:
    headers = sign(BODY, secret)
    with pytest.raises(WebhookVerificationError):
        WebhookVerifier(secret).verify(headers, tamper(BODY))


def test_a_changed_id_or_timestamp_is_refused(secret: str, sign: Any) -> None:
    headers = sign(BODY, secret)
    verifier = WebhookVerifier(secret)
    with pytest.raises(WebhookVerificationError):
        verifier.verify({**headers, "webhook-id": "msg_other"}, BODY)
    with pytest.raises(WebhookVerificationError):
        ts = str(int(headers["webhook-timestamp"]) - 1)
        verifier.verify({**headers, "webhook-timestamp": ts}, BODY)


@pytest.mark.parametrize(("offset", "why"), [(-301, "too old"), (301, "future")])
def test_timestamps_outside_five_minutes_either_way_are_refused(
    secret: str, sign: Any, offset: int, why: str
) -> None:
    now = time.time()
    headers = sign(BODY, secret, timestamp=now + offset)
    with pytest.raises(WebhookVerificationError, match=why):
        WebhookVerifier(secret).verify(headers, BODY, now=now)


@pytest.mark.parametrize("offset", [-299, 0, 299])
def test_timestamps_within_five_minutes_are_accepted(secret: str, sign: Any, offset: int) -> None:
    now = float(int(time.time()))
    headers = sign(BODY, secret, timestamp=now + offset)
    WebhookVerifier(secret).verify(headers, BODY, now=now)


def test_the_tolerance_is_configurable(secret: str, sign: Any) -> None:
    now = time.time()
    headers = sign(BODY, secret, timestamp=now - 60)
    with pytest.raises(WebhookVerificationError):
        WebhookVerifier(secret, tolerance=timedelta(seconds=30)).verify(headers, BODY, now=now)
    WebhookVerifier(secret, tolerance=120).verify(headers, BODY, now=now)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(secret: str, sign: Any, missing: str) -> None:
    headers = sign(BODY, secret)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        WebhookVerifier(secret).verify(headers, BODY)


def test_header_names_are_matched_case_insensitively(secret: str, sign: Any) -> None:
    headers = {k.title(): v for k, v in sign(BODY, secret).items()}
    WebhookVerifier(secret).verify(headers, BODY)


def test_unknown_versions_and_garbage_signatures_are_skipped(secret: str, sign: Any) -> None:
    headers = sign(BODY, secret)
    headers["webhook-signature"] = "v2,abc v1,!!notbase64!! v1a,xyz " + headers["webhook-signature"]
    WebhookVerifier(secret).verify(headers, BODY)
    headers["webhook-signature"] = "v2,abc v1,!!notbase64!!"
    with pytest.raises(WebhookVerificationError, match="no v1"):
        WebhookVerifier(secret).verify(headers, BODY)


def test_a_non_integer_timestamp_is_refused(secret: str, sign: Any) -> None:
    headers = sign(BODY, secret)
    headers["webhook-timestamp"] = "12.5"
    with pytest.raises(WebhookVerificationError, match="integer"):
        WebhookVerifier(secret).verify(headers, BODY)


def test_secrets_may_omit_the_prefix_and_the_padding(secret: str, sign: Any) -> None:
    headers = sign(BODY, secret)
    bare = secret.removeprefix("whsec_").rstrip("=")
    WebhookVerifier(bare).verify(headers, BODY)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not base64!", "", "whsec_====="])
def test_undecodable_secrets_fail_at_construction(bad: str) -> None:
    with pytest.raises(InvalidSecretError) as caught:
        WebhookVerifier([bad])
    assert isinstance(caught.value, ValueError)
    if len(bad) > len("whsec_"):
        assert bad.removeprefix("whsec_") not in str(caught.value)


def test_at_least_one_secret_is_required() -> None:
    with pytest.raises(InvalidSecretError):
        WebhookVerifier([])


def test_repr_hides_the_secrets(secret: str) -> None:
    text = repr(WebhookVerifier([secret]))
    assert secret.removeprefix("whsec_")[:8] not in text
    assert "1 hidden" in text


def test_a_real_broker_style_header_with_raw_key_bytes(sign: Any) -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    WebhookVerifier(secret).verify(sign(BODY, secret), BODY)

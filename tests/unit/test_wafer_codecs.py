"""The Wafer envelope and packets: what the legacy SDKs send, checked as strictly as the
scheme allows, and what they parse, produced exactly."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.wafer import envelope, packets
from tunnel_broker.wafer.envelope import EnvelopeError, open_request
from tunnel_broker.wafer.settings import WaferSettings

KEY = "tunnel-signature-key"
HOST = "biz.example.com"


def request(data: str, key: str = KEY, host: str = HOST, **extra: object) -> bytes:
    body = {"data": data, "tcId": envelope.tc_id(host), "signature": envelope.sign(data, key)}
    return json.dumps({**body, **extra}).encode()


def test_signature_and_tc_id_are_the_sdks_sha1_and_md5() -> None:
    # qcloud-weapp-server-sdk: sha1(data + key), md5(serverHost), lowercase hex.
    data = '{"receiveUrl":"https://biz.example.com/tunnel","protocolType":"wss"}'
    assert envelope.sign(data, KEY) == hashlib.sha1((data + KEY).encode()).hexdigest()
    assert envelope.tc_id(HOST) == hashlib.md5(HOST.encode()).hexdigest()


@given(st.text(max_size=200), st.sampled_from([KEY, "second-key-0001"]))
def test_a_request_signed_with_any_key_of_the_app_opens(data: str, key: str) -> None:
    text = json.dumps({"text": data})
    opened = open_request(
        request(text, key), [KEY, "second-key-0001"], frozenset({envelope.tc_id(HOST)})
    )
    assert opened.data == text and opened.value == {"text": data}


def test_the_signature_covers_the_data_as_received_not_a_reencoding() -> None:
    text = '{"b": 1,   "a":2}'  # spaces and order a re-serialisation would change
    opened = open_request(request(text), [KEY], frozenset({envelope.tc_id(HOST)}))
    assert opened.value == {"b": 1, "a": 2}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", envelope.BAD_REQUEST),
        (b"[]", envelope.BAD_REQUEST),
        (json.dumps({"data": {}, "tcId": "x", "signature": "y"}).encode(), envelope.BAD_REQUEST),
        (request("{}", host="other.example.com"), envelope.UNKNOWN_SERVER),
        (request("{}", key="wrong-key-000"), envelope.BAD_SIGNATURE),
        (request("not json"), envelope.BAD_DATA),
    ],
)
def test_bad_requests_get_the_legacy_error_without_echoing_secrets(body: bytes, code: int) -> None:
    with pytest.raises(EnvelopeError) as refused:
        open_request(body, [KEY], frozenset({envelope.tc_id(HOST)}))
    assert refused.value.code == code
    answer = envelope.refusal(refused.value)
    assert set(answer) == {"code", "message"} and KEY not in json.dumps(answer)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4))
def test_a_signed_answer_carries_its_data_as_json_text_the_sdk_can_verify(data: dict) -> None:
    answer = envelope.answer(data, KEY)
    assert answer["code"] == 0 and json.loads(answer["data"]) == data
    assert answer["signature"] == envelope.sign(answer["data"], KEY)


@given(st.text(max_size=50), st.text(max_size=200))
def test_a_packet_splits_at_the_first_colon(kind: str, content: str) -> None:
    kind = kind.replace(":", "")
    assert packets.parse(f"{kind}:{content}") == packets.Packet(kind, content)
    assert packets.parse(kind) == packets.Packet(kind, None)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5), st.lists, max_leaves=5))
def test_only_json_objects_are_message_contents(value: object) -> None:
    assert not packets.is_json_object(json.dumps(value))
    assert packets.is_json_object(json.dumps({"type": "t", "content": value}))
    assert not packets.is_json_object("{not json")


def test_timeout_frame_sets_the_heartbeat_in_seconds() -> None:
    assert packets.timeout_frame(15) == "timeout:15"
    assert packets.timeout_frame(0.5) == "timeout:0.5"


def settings(**fields: object) -> WaferSettings:
    return WaferSettings.model_validate(
        {"signing_keys": [KEY], "business_hosts": [HOST, "api.example.com:8443"], **fields}
    )


def test_events_go_only_to_the_business_hosts() -> None:
    wafer = settings()
    assert wafer.receive_url("https://biz.example.com/weapp/tunnel") == (
        "https://biz.example.com/weapp/tunnel"
    )
    assert wafer.receive_url("http://api.example.com:8443/t") == "http://api.example.com:8443/t"
    for elsewhere in (
        "https://evil.example.com/tunnel",
        "http://api.example.com/t",  # that host only with its port
        "ftp://biz.example.com/x",
        "https://biz.example.com:99999/",
        "not a url",
    ):
        assert wafer.receive_url(elsewhere) is None


def test_signing_keys_stay_out_of_reprs() -> None:
    assert KEY not in repr(settings()) and KEY not in str(settings())


def test_the_receive_origin_rewrite_keeps_path_and_query() -> None:
    wafer = settings(receive_url_origin="http://127.0.0.1:5757")
    assert wafer.receive_url("https://biz.example.com/weapp/tunnel?x=1") == (
        "http://127.0.0.1:5757/weapp/tunnel?x=1"
    )
    assert wafer.tc_ids == {envelope.tc_id(HOST), envelope.tc_id("api.example.com:8443")}


@pytest.mark.parametrize(
    "fields",
    [
        {"signing_keys": []},
        {"signing_keys": ["short"]},
        {"business_hosts": ["https://biz.example.com"]},
        {"receive_url_origin": "http://127.0.0.1:5757/path"},
        {"heartbeat_seconds": 0},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        settings(**fields)

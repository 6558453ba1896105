"""Webhook bodies become typed events carrying the tunnel's user and identity."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from business_sdk import (
    TunnelClosed,
    TunnelConnected,
    TunnelMessage,
    UnknownEvent,
    WebhookPayloadError,
    parse_events,
)


def body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def test_each_type_becomes_its_class_with_identity_on_every_event(make_event: Any) -> None:
    events = parse_events(
        body(
            make_event("tunnel.connected"),
            make_event("tunnel.message", data="hi"),
            make_event("tunnel.closed", code=4001, reason="kicked"),
        )
    )
    connected, message, closed = events
    assert isinstance(connected, TunnelConnected)
    assert isinstance(message, TunnelMessage)
    assert isinstance(closed, TunnelClosed)
    for event in events:
        assert event.user_id == "user-1"
        assert event.identity == {"openid": "o-123", "nick": "小明"}
        assert event.meta == {"room": "lobby"}
        assert event.app_id == "app1"
        assert event.tunnel_id == "tun_a"
        assert event.time == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert (closed.code, closed.reason) == (4001, "kicked")
    assert [e.type for e in events] == ["tunnel.connected", "tunnel.message", "tunnel.closed"]


def test_a_text_message_has_text_and_its_utf8_bytes(make_event: Any) -> None:
    (event,) = parse_events(body(make_event(data='{"type":"speak","content":"你好"}')))
    assert isinstance(event, TunnelMessage)
    assert event.text == '{"type":"speak","content":"你好"}'
    assert event.data == event.text.encode()
    assert not event.is_binary
    assert event.json() == {"type": "speak", "content": "你好"}


def test_a_binary_message_has_bytes_and_no_text(make_event: Any) -> None:
    raw = bytes([0, 255, 1])
    encoded = base64.b64encode(raw).decode()
    (event,) = parse_events(body(make_event(data=..., data_base64=encoded)))
    assert isinstance(event, TunnelMessage)
    assert event.text is None
    assert event.data == raw
    assert event.is_binary


def test_an_event_type_newer_than_the_sdk_is_kept_not_rejected(make_event: Any) -> None:
    (event,) = parse_events(body(make_event("tunnel.recovered", data=..., extra=1)))
    assert isinstance(event, UnknownEvent)
    assert event.type == "tunnel.recovered"
    assert event.raw["extra"] == 1


def test_missing_identity_and_meta_read_as_empty(make_event: Any) -> None:
    (event,) = parse_events(body(make_event(identity=..., meta=None)))
    assert event.identity == {}
    assert event.meta == {}


def test_events_compare_without_their_raw_json(make_event: Any) -> None:
    one = make_event("tunnel.connected")
    (a,) = parse_events(body(one))
    (b,) = parse_events(body({**one, "unknown_member": True}))
    assert a == b
    assert "raw" not in repr(a)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"events": {}}',
        b'{"events": [1]}',
        b'{"actions": []}',
    ],
)
def test_a_body_that_is_not_a_batch_is_a_payload_error(raw: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_events(raw)


@pytest.mark.parametrize(
    "change",
    [
        {"id": ...},
        {"tunnel_id": 5},
        {"user_id": ...},
        {"time": "yesterday"},
        {"time": "2026-11-23T10:00:00"},
        {"identity": []},
        {"data": ..., "data_base64": ...},
        {"data": ..., "data_base64": "***"},
    ],
)
def test_a_malformed_event_is_a_payload_error(make_event: Any, change: dict[str, Any]) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_events(body(make_event(**change)))


@pytest.mark.parametrize("change", [{"code": "1000"}, {"code": True}, {"reason": 5}])
def test_a_malformed_closed_event_is_a_payload_error(
    make_event: Any, change: dict[str, Any]
) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_events(body(make_event("tunnel.closed", **change)))

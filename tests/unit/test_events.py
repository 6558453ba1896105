"""Webhook events are JSON whatever the client sent."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.webhooks import events


@given(text=st.text(max_size=100), code=st.integers(1000, 4999), reason=st.text(max_size=30))
def test_events_are_valid_json(text: str, code: int, reason: str) -> None:
    fragment = events.tunnel_fragment("a", "t", 'u"ser', {"n": text}, {"m": [1]})
    for event in (
        events.connected(fragment, "t"),
        events.message(fragment, "t", text),
        events.message(fragment, "t", text.encode()),
        events.closed(fragment, "t", code, reason),
    ):
        decoded = json.loads(event.body)
        assert decoded["user_id"] == 'u"ser'
        assert decoded["identity"] == {"n": text}
        assert decoded["id"] == event.id
    body = json.loads(events.batch_body([events.connected(fragment, "t")] * 2))
    assert len(body["events"]) == 2


tunnel_ids = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
identities = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)


@st.composite
def encoded_events(draw: st.DrawFn) -> events.EncodedEvent:
    tunnel_id = draw(tunnel_ids)
    fragment = events.tunnel_fragment(
        draw(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)),
        tunnel_id,
        draw(st.text(min_size=1, max_size=30)),
        draw(identities),
        draw(identities),
    )
    kind = draw(st.sampled_from(["connected", "text", "binary", "closed"]))
    if kind == "connected":
        return events.connected(fragment, tunnel_id)
    if kind == "text":
        return events.message(fragment, tunnel_id, draw(st.text(max_size=200)))
    if kind == "binary":
        return events.message(fragment, tunnel_id, draw(st.binary(max_size=200)))
    return events.closed(fragment, tunnel_id, draw(st.integers(1000, 4999)), draw(st.text()))


@given(event=encoded_events())
def test_records_round_trip(event: events.EncodedEvent) -> None:
    record = events.to_record(event)
    assert record.startswith(event.tunnel_id + "\n")
    assert events.from_record(record) == event


@pytest.mark.parametrize(
    "payload",
    ["line\nbreak\r\n", "caf\u00e9 \u4e2d\u6587 \U0001f600", "sep\u2028\u2029\x85", b"\n\x00\xff"],
)
def test_records_round_trip_awkward_payloads(payload: str | bytes) -> None:
    fragment = events.tunnel_fragment("a", "t-1", "u\n", {"\u2028": "\n"}, {})
    event = events.message(fragment, "t-1", payload)
    assert events.from_record(events.to_record(event)) == event


def test_a_records_body_is_everything_after_the_third_line() -> None:
    event = events.from_record("t1\nevt_1\ntunnel.closed\n{\n}\n")
    assert event == events.EncodedEvent("evt_1", "tunnel.closed", "t1", b"{\n}\n")


@pytest.mark.parametrize(
    "record",
    [
        "",
        "t1",
        "t1\nevt_1",
        "t1\nevt_1\ntunnel.message",  # no body line
        "t1\nevt_1\ntunnel.bogus\n{}",
        "t1\nevt_1\nTUNNEL.MESSAGE\n{}",
        "t1\nevt_1\n\n{}",
        "\nevt_1\ntunnel.message\n{}",  # no tunnel id
        "t1\n\ntunnel.message\n{}",  # no event id
        "{}\nt1\nevt_1\ntunnel.message",  # lines out of order
    ],
)
def test_from_record_refuses_what_is_not_a_record(record: str) -> None:
    with pytest.raises(ValueError):
        events.from_record(record)

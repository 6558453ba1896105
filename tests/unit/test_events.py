"""Webhook events are JSON whatever the client sent."""

from __future__ import annotations

import json

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

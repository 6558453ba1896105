"""What the live trace shows: sizes always, payloads only when the app allows, redacted
and cut; filters; and the bounds that keep a trace from costing the traced app."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.apps import AppRegistry, parse_apps
from tunnel_broker.targets import Target
from tunnel_broker.trace.records import (
    PAYLOAD_CHARS,
    REDACTED,
    SENSITIVE_KEY,
    event_record,
    matches,
    payload_fields,
    push_record,
    redact,
)
from tunnel_broker.trace.tracer import RECORDS_PER_SECOND, WATCHER_QUEUE, AppTap, Watcher
from tunnel_broker.webhooks import events

FRAGMENT = events.tunnel_fragment("demo", "t1", "ann", {"openid": "o-secret"}, {})


def test_payloads_are_hidden_unless_the_app_shows_them() -> None:
    assert payload_fields("héllo", show=False) == {"size": 6}
    shown = payload_fields('{"text": "hi", "password": "hunter2"}', show=True)
    assert json.loads(shown["data"]) == {"text": "hi", "password": REDACTED}
    assert shown["truncated"] is False
    long = payload_fields("x" * 1000, show=True)
    assert (len(long["data"]), long["truncated"], long["size"]) == (PAYLOAD_CHARS, True, 1000)
    binary = payload_fields(bytes(range(200)), show=True)
    assert binary["size"] == 200 and binary["truncated"] is True
    assert "data" not in payload_fields(b"\x00", show=False)
    assert payload_fields("not {json", show=True)["data"] == "not {json"


def test_event_records_carry_ids_sizes_and_close_codes() -> None:
    message = event_record(events.message(FRAGMENT, "t1", "hi"), show=False)
    assert message["kind"] == "event" and message["type"] == "tunnel.message"
    assert (message["tunnel_id"], message["user_id"], message["size"]) == ("t1", "ann", 2)
    assert "data" not in message
    assert "o-secret" not in json.dumps(message)  # identity is never in a record
    binary = event_record(events.message(FRAGMENT, "t1", b"\x01\x02"), show=True)
    assert binary["size"] == 2 and binary["data_base64"] == "AQI="
    closed = event_record(events.closed(FRAGMENT, "t1", 4000, "bye"), show=True)
    assert (closed["code"], closed["reason"]) == (4000, "bye")


def test_filters_pick_a_tunnel_or_a_user() -> None:
    mine = event_record(events.connected(FRAGMENT, "t1"), show=False)
    to_ann = push_record(Target("users", ("ann",)), "x", "api", show=False)
    to_all = push_record(Target("all"), "x", "reply", show=False)
    to_t2 = push_record(Target.tunnel("t2"), "x", "api", show=False)
    delivery = {"kind": "delivery", "status": 200}
    assert all(matches(r, None, None) for r in (mine, to_ann, to_all, to_t2, delivery))
    assert [matches(r, "t1", None) for r in (mine, to_ann, to_all, to_t2, delivery)] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert [matches(r, None, "ann") for r in (mine, to_ann, to_all, to_t2)] == [
        True,
        True,
        True,
        False,
    ]
    assert not matches(mine, "t1", "bob")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _sensitive_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if SENSITIVE_KEY.search(k)]
        return found + [x for v in value.values() for x in _sensitive_values(v)]
    if isinstance(value, list):
        return [x for v in value for x in _sensitive_values(v)]
    return []


@given(json_values)
def test_no_sensitive_value_survives_redaction(value: Any) -> None:
    assert all(v == REDACTED for v in _sensitive_values(redact(value)))


@given(st.text(max_size=600) | json_values.map(json.dumps))
def test_a_shown_payload_is_never_longer_than_the_cut(text: str) -> None:
    shown = payload_fields(text, show=True)
    assert len(shown["data"]) <= PAYLOAD_CHARS
    if not text.lstrip().startswith(("{", "[")):  # JSON is shown compacted, redacted
        assert shown["truncated"] == (len(text) > PAYLOAD_CHARS)
        assert shown["data"] == text[:PAYLOAD_CHARS]


def test_a_busy_app_is_sampled_and_told_how_much_was_left_out() -> None:
    published: list[dict[str, Any]] = []
    apps = AppRegistry(parse_apps([]))
    now = [100.0]
    tap = AppTap("demo", apps, lambda _app, record: published.append(record), lambda: now[0])
    event = events.message(FRAGMENT, "t1", "hi")
    for _ in range(RECORDS_PER_SECOND + 10):
        tap.event("demo", event)
    assert len(published) == RECORDS_PER_SECOND and tap.dropped == 10
    now[0] += 1.5 / RECORDS_PER_SECOND  # one more record's worth of time (and a bit)
    tap.event("demo", event)
    assert published[-2] == {**published[-2], "kind": "dropped", "count": 10, "why": "rate"}
    assert published[-1]["kind"] == "event" and tap.dropped == 0


async def test_a_slow_watcher_loses_the_oldest_records_and_is_told() -> None:
    watcher = Watcher("demo")
    for index in range(WATCHER_QUEUE + 3):
        watcher.offer({"kind": "event", "n": index})
    first = await watcher.next(0.1)
    assert first is not None and (first["kind"], first["count"]) == ("dropped", 3)
    second = await watcher.next(0.1)
    assert second == {"kind": "event", "n": 3}
    empty = Watcher("demo")
    assert await empty.next(0.01) is None

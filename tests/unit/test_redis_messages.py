"""Messages between pods: encode and decode are inverse; decode refuses anything else
with MalformedMessage, and with nothing else."""

from __future__ import annotations

import contextlib
import json
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.backend.redis.messages import (
    Close,
    ControlMessage,
    MalformedMessage,
    Membership,
    Push,
    Replace,
    decode,
    encode,
)
from tunnel_broker.targets import Target, TargetKind

KINDS: list[TargetKind] = list(get_args(TargetKind))


def wire_of(message: ControlMessage, sender: str = "node-1") -> dict[str, Any]:
    decoded = json.loads(encode(message, sender))
    assert isinstance(decoded, dict)
    return decoded


def valid_deliver() -> dict[str, Any]:
    return wire_of(Push("demo", Target("users", ("alice",)), "hi"))


def valid_close() -> dict[str, Any]:
    return wire_of(Close("demo", Target.tunnel("t1"), 1000, "bye"))


def valid_replace() -> dict[str, Any]:
    return wire_of(Replace("demo", "t1", "abcd"))


def valid_join() -> dict[str, Any]:
    return wire_of(Membership("demo", "t1", "g", join=True))


# ---- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Push("demo", Target.tunnel("t1"), "hello"),
        Push("demo", Target("users", ("alice", "bob")), 'héllo \u2603 "quoted"\n'),
        Push("demo", Target("groups", ("g",)), b"\x00\xff binary"),
        Push("demo", Target("all"), b""),
        Push("demo", Target("all"), ""),
        Push("demo", Target("tunnels", ("t1", "t2")), "numbered", (7, 0)),
        Close("demo", Target("groups", ("g", "h")), 4000, "kicked"),
        Close("demo", Target("all"), 1001, ""),
        Replace("demo", "t1", "0123456789abcdef"),
        Membership("demo", "t1", "room-1", join=True),
        Membership("demo", "t1", "room-1", join=False),
    ],
    ids=repr,
)
def test_every_message_type_round_trips_with_its_sender(message: ControlMessage) -> None:
    assert decode(encode(message, "node-a")) == ("node-a", message)


def test_decode_accepts_bytes_as_redis_may_deliver_them() -> None:
    message = Push("demo", Target.tunnel("t1"), "hi")
    assert decode(encode(message, "n").encode()) == ("n", message)


def test_push_payload_types_survive_the_round_trip() -> None:
    # A text payload must not come back as bytes (or the reverse): the frame type differs.
    _, text = decode(encode(Push("a", Target("all"), "aGk="), "n"))
    _, binary = decode(encode(Push("a", Target("all"), b"hi"), "n"))
    assert isinstance(text, Push) and text.payload == "aGk="
    assert isinstance(binary, Push) and binary.payload == b"hi"


def test_membership_join_and_leave_have_their_own_ops() -> None:
    assert wire_of(Membership("a", "t", "g", join=True))["op"] == "join"
    assert wire_of(Membership("a", "t", "g", join=False))["op"] == "leave"


def test_wire_form_is_stable() -> None:
    # Pods of two releases share a Redis during a rolling upgrade: the field names stay.
    assert wire_of(Push("demo", Target("users", ("u",)), b"\x01"), "n1") == {
        "op": "deliver",
        "app": "demo",
        "kind": "users",
        "ids": ["u"],
        "payload": {"b64": "AQ=="},
        "from": "n1",
    }
    assert wire_of(Replace("demo", "t1", "c"), "n1") == {
        "op": "replace",
        "app": "demo",
        "kind": "tunnels",
        "ids": ["t1"],
        "conn": "c",
        "from": "n1",
    }


targets = st.builds(
    Target,
    st.sampled_from(KINDS),
    st.lists(st.text(max_size=20), max_size=5).map(tuple),
)
messages: st.SearchStrategy[ControlMessage] = st.one_of(
    st.builds(Push, st.text(max_size=30), targets, st.one_of(st.text(), st.binary())),
    st.builds(Close, st.text(max_size=30), targets, st.integers(), st.text(max_size=50)),
    st.builds(Replace, st.text(max_size=30), st.text(max_size=30), st.text(max_size=30)),
    st.builds(Membership, st.text(max_size=30), st.text(max_size=30), st.text(), st.booleans()),
)


@given(message=messages, sender=st.text(max_size=30))
def test_any_message_round_trips(message: ControlMessage, sender: str) -> None:
    assert decode(encode(message, sender)) == (sender, message)


# ---- malformed input ---------------------------------------------------------------------


def _without(wire: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k != key}


def _with(wire: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**wire, **changes}


MALFORMED: dict[str, str | bytes] = {
    "empty": "",
    "not json": "deliver to alice",
    "truncated json": '{"op": "deliver"',
    "invalid utf-8": b'{"op": "\xff"}',
    "a list": "[1, 2]",
    "a string": '"deliver"',
    "null": "null",
    "a number": "1",
    "empty object": "{}",
    **{
        f"no {key}": json.dumps(_without(valid_deliver(), key))
        for key in ("from", "app", "kind", "ids", "payload", "op")
    },
    "no code": json.dumps(_without(valid_close(), "code")),
    "no reason": json.dumps(_without(valid_close(), "reason")),
    "no conn": json.dumps(_without(valid_replace(), "conn")),
    "no group": json.dumps(_without(valid_join(), "group")),
    "from not a string": json.dumps(_with(valid_deliver(), **{"from": 7})),
    "app not a string": json.dumps(_with(valid_deliver(), app=None)),
    "ids not a list": json.dumps(_with(valid_deliver(), ids="alice")),
    "ids an object": json.dumps(_with(valid_deliver(), ids={"alice": 1})),
    "ids holding a number": json.dumps(_with(valid_deliver(), ids=["alice", 1])),
    "code a string": json.dumps(_with(valid_close(), code="1000")),
    "code a bool": json.dumps(_with(valid_close(), code=True)),
    "code a float": json.dumps(_with(valid_close(), code=1000.0)),
    "reason not a string": json.dumps(_with(valid_close(), reason=None)),
    "payload a string": json.dumps(_with(valid_deliver(), payload="hi")),
    "payload without text or b64": json.dumps(_with(valid_deliver(), payload={})),
    "payload text not a string": json.dumps(_with(valid_deliver(), payload={"text": 1})),
    "payload b64 not a string": json.dumps(_with(valid_deliver(), payload={"b64": [1]})),
    "payload b64 invalid": json.dumps(_with(valid_deliver(), payload={"b64": "not base64!"})),
    "payload b64 with a non-alphabet character": json.dumps(
        _with(valid_deliver(), payload={"b64": "A*Q=="})
    ),
    "payload b64 bad padding": json.dumps(_with(valid_deliver(), payload={"b64": "AQ="})),
    "payload b64 not ascii": json.dumps(_with(valid_deliver(), payload={"b64": "é"})),
    "numbers not a list": json.dumps(_with(valid_deliver(), numbers=7)),
    "numbers not one per id": json.dumps(_with(valid_deliver(), numbers=[1, 2])),
    "numbers holding a string": json.dumps(_with(valid_deliver(), numbers=["1"])),
    "numbers holding a negative": json.dumps(_with(valid_deliver(), numbers=[-1])),
    "numbers holding a bool": json.dumps(_with(valid_deliver(), numbers=[True])),
    "unknown op": json.dumps(_with(valid_deliver(), op="explode")),
    "op not a string": json.dumps(_with(valid_deliver(), op=1)),
    "unknown kind": json.dumps(_with(valid_deliver(), kind="planets")),
    "kind null": json.dumps(_with(valid_deliver(), kind=None)),
    "replace with two ids": json.dumps(_with(valid_replace(), ids=["t1", "t2"])),
    "replace with no id": json.dumps(_with(valid_replace(), ids=[])),
    "replace of a user": json.dumps(_with(valid_replace(), kind="users")),
    "join with two ids": json.dumps(_with(valid_join(), ids=["t1", "t2"])),
    "leave of a group": json.dumps(_with(valid_join(), op="leave", kind="groups")),
    "group not a string": json.dumps(_with(valid_join(), group=["g"])),
    "conn not a string": json.dumps(_with(valid_replace(), conn=1)),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_malformed_message(data: str | bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(data)


def test_the_valid_bases_of_the_malformed_cases_decode() -> None:
    # So each malformed case fails for the one change made to it.
    for wire in (valid_deliver(), valid_close(), valid_replace(), valid_join()):
        decode(json.dumps(wire))
    decode(json.dumps(_with(valid_join(), op="leave")))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=12,
)
FIELDS = ["op", "from", "app", "kind", "ids", "payload", "code", "reason", "conn", "group"]
OPS = ["deliver", "close", "replace", "join", "leave"]


def _decodes_or_is_malformed(data: str | bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(data)


@given(data=st.one_of(st.text(), st.binary()))
def test_arbitrary_input_decodes_or_raises_malformed_message_only(data: str | bytes) -> None:
    _decodes_or_is_malformed(data)


@given(wire=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text()), json_values))
def test_arbitrary_json_objects_decode_or_raise_malformed_message_only(
    wire: dict[str, Any],
) -> None:
    _decodes_or_is_malformed(json.dumps(wire))


@st.composite
def nearly_valid_wires(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message of any op with some fields removed or replaced by any JSON."""
    wire = wire_of(draw(messages), draw(st.text(max_size=10)))
    if draw(st.booleans()):
        wire["op"] = draw(st.sampled_from(OPS))
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            wire.pop(key, None)
        else:
            wire[key] = draw(json_values)
    return wire


@given(wire=nearly_valid_wires())
def test_nearly_valid_messages_decode_or_raise_malformed_message_only(
    wire: dict[str, Any],
) -> None:
    _decodes_or_is_malformed(json.dumps(wire))


# ---- inputs that once let other exceptions escape -----------------------------------------


@pytest.mark.parametrize("kind", [[], {}, ["users"]], ids=["list", "object", "list of kind"])
def test_unhashable_kind_raises_malformed_message(kind: object) -> None:
    with pytest.raises(MalformedMessage):
        decode(json.dumps(_with(valid_deliver(), kind=kind)))


@pytest.mark.parametrize("data", ["[" * 100_000, '{"a":' * 100_000], ids=["array", "object"])
def test_deeply_nested_json_raises_malformed_message(data: str) -> None:
    with pytest.raises(MalformedMessage):
        decode(data)

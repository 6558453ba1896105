"""Webhook replies as a business server might get them wrong, each with what the broker
must make of it.

A reply is a 2xx status, headers and a body. Bodies are action lists (docs/api.md,
"Actions in the response") or anything else: bytes, non-JSON, JSON of other shapes,
huge or deeply nested bodies. Each generated action is valid or invalid *by
construction* (a valid action, or one with exactly one known defect), so the number of
actions the broker must count as bad (``tb_webhook_bad_actions_total``) and of replies
it must count as unreadable (``tb_webhook_bad_replies_total``) is known without asking
the broker's own validation code. ``OWN`` and ``CURRENT`` stand for the tunnel and the
event of the example; they are filled in when the batch arrives.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import strategies as st

OWN = "\x00own-tunnel\x00"  # replaced by the example's tunnel id
CURRENT = "\x00current-event\x00"  # replaced by the id of the example's message event
# The broker reads at most this much of a reply (tunnel_broker/webhooks/sender.py) and at
# most this much of its header lines (webhooks/http_client.py); beyond, the reply counts
# as unreadable but still acknowledges the batch.
MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_REPLY_HEADER_BYTES = 64 * 1024

EventRef = Literal["none", "current", "foreign"]
EVENT_REFS: tuple[EventRef, ...] = ("none", "current", "foreign")


@dataclass(frozen=True)
class Action:
    """One action of a reply and what it is by construction.

    ``invalid``: it has a defect, so the broker must skip and count it. Otherwise it is
    valid and its fate depends on what it acts on: ``own`` says it acts on the example's
    tunnel (named, or by default the batch's only tunnel), ``event`` whether it names the
    batch's event, another one (it then names no tunnel at all: counted), or none, and
    ``group`` is the group of a join or leave. ``judge`` replays them in order.
    """

    value: Any
    kind: str  # send | close | join | leave | other
    invalid: bool
    own: bool = False
    event: EventRef = "none"
    group: str | None = None


@dataclass(frozen=True)
class Body:
    """A reply body: ``actions`` rendered as ``{"actions": [...]}`` (with ``extra`` keys
    at the top), or ``raw`` bytes sent as they are."""

    actions: tuple[Action, ...] | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    raw: bytes | None = None


@dataclass(frozen=True)
class ReplySpec:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: Body


@dataclass
class Expectation:
    """What a reply must add to the broker's counters."""

    bad_replies: int = 0
    bad_actions_min: int = 0
    bad_actions_max: int = 0
    notes: list[str] = field(default_factory=list)


def substitute(value: Any, tunnel_id: str, event_id: str) -> Any:
    """``value`` with ``OWN`` and ``CURRENT`` replaced, at any depth."""
    if value == OWN:
        return tunnel_id
    if value == CURRENT:
        return event_id
    if isinstance(value, list):
        return [substitute(v, tunnel_id, event_id) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, tunnel_id, event_id) for k, v in value.items()}
    return value


def render(body: Body, tunnel_id: str, event_id: str) -> bytes:
    if body.raw is not None:
        return body.raw
    assert body.actions is not None
    actions = [substitute(a.value, tunnel_id, event_id) for a in body.actions]
    return json.dumps({"actions": actions, **dict(body.extra)}).encode()


def judge(spec: ReplySpec, max_groups: int) -> Expectation:
    """What the broker must count for ``spec`` (a reply to a batch holding exactly one
    event, a message of a tunnel in no group)."""
    expected = Expectation()
    header_bytes = sum(len(n) + len(v) for n, v in spec.headers)
    if header_bytes > MAX_REPLY_HEADER_BYTES:
        expected.bad_replies = 1
        expected.notes.append("headers over the limit")
        return expected
    if spec.status == 204:
        return expected  # no content, whatever was meant
    if spec.body.raw is not None:
        return _judge_raw(spec.body.raw, expected)
    actions = spec.body.actions or ()
    groups: set[str] = set()
    closed = False
    for action in actions:
        low, high = _judge_action(action, groups, closed, max_groups)
        expected.bad_actions_min += low
        expected.bad_actions_max += high
        if action.kind == "close" and action.own and not action.invalid:
            closed = True
    return expected


def _judge_raw(raw: bytes, expected: Expectation) -> Expectation:
    """A body given as bytes, judged as docs/api.md says: readable if it is empty or a
    JSON object whose ``actions`` (if any) is a list; such actions are arbitrary, so
    each may or may not be valid."""
    if len(raw) > MAX_REPLY_BYTES:
        expected.bad_replies = 1
        return expected
    if not raw.strip():
        return expected
    try:
        reply = json.loads(raw)
    except (ValueError, RecursionError):
        expected.bad_replies = 1
        return expected
    if not isinstance(reply, dict) or not isinstance(reply.get("actions", []), list):
        expected.bad_replies = 1
        return expected
    expected.bad_actions_max = len(reply.get("actions", []))
    return expected


def _judge_action(
    action: Action, groups: set[str], closed: bool, max_groups: int
) -> tuple[int, int]:
    """(least, most) bad actions this one adds, updating the own tunnel's groups."""
    if action.invalid:
        return 1, 1
    if action.event == "foreign":
        return 1, 1  # names no tunnel and an event that is not in the batch
    if not action.own or action.kind in ("send", "close"):
        return 0, 0
    if closed:
        return 0, 1  # acting on a tunnel this reply already closed
    assert action.group is not None
    if action.kind == "leave":
        groups.discard(action.group)
        return 0, 0
    if action.group not in groups and len(groups) >= max_groups:
        return 1, 1  # too many groups for the tunnel
    groups.add(action.group)
    return 0, 0


# ---- strategies ------------------------------------------------------------------------------

# Ids and group names the broker must accept: 1-128 letters, digits, punctuation and
# symbols (never white space, which ids may not hold, nor '/'), not '.' or '..'.
ids = st.text(
    st.characters(categories=["L", "N", "P", "S"], exclude_characters="/"),
    min_size=1,
    max_size=24,
).filter(lambda s: s not in (".", ".."))
bad_ids = st.sampled_from(["", "a b", "a/b", ".", "..", "x" * 129, "tab\there", "a\x1cb", "\udc00"])
reasons = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 123)
codes = st.one_of(st.none(), st.just(1000), st.integers(4000, 4999))
texts = st.text(max_size=40)


def _targets() -> st.SearchStrategy[tuple[dict[str, Any], bool]]:
    """A valid TARGET and whether it reaches the own tunnel."""
    id_lists = st.lists(ids, min_size=1, max_size=3)
    return st.one_of(
        st.builds(lambda ids: ({"tunnels": ids}, False), id_lists),
        st.just(({"tunnels": [OWN]}, True)),
        st.builds(lambda ids: ({"users": ids}, False), id_lists),
        st.builds(lambda ids: ({"groups": ids}, False), id_lists),
        st.just(({"all": True}, True)),
    )


@st.composite
def valid_actions(draw: st.DrawFn) -> Action:
    kind = draw(st.sampled_from(["send", "close", "join", "leave"]))
    value: dict[str, Any] = {"type": kind}
    event: EventRef = draw(st.sampled_from(EVENT_REFS))
    own = False
    if kind == "send":
        if draw(st.booleans()):
            value["data"] = draw(texts)
        else:
            value["data_base64"] = base64.b64encode(draw(st.binary(max_size=40))).decode()
        if draw(st.booleans()):
            value["to"], own = draw(_targets())
            event = "none" if event == "foreign" else event  # 'to' wins over event_id
        else:
            own = True
    else:
        choice = draw(st.sampled_from(["default", "own", "other"]))
        if choice == "own":
            value["tunnel_id"] = OWN
        elif choice == "other":
            value["tunnel_id"] = draw(ids)
        own = choice != "other"
        if choice != "default" and event == "foreign":
            event = "none"  # an explicit tunnel_id wins over event_id
        if kind == "close":
            code = draw(codes)
            if code is not None:
                value["code"] = code
            if draw(st.booleans()):
                value["reason"] = draw(reasons)
        else:
            value["group"] = draw(st.sampled_from(["g1", "g2", "g3", "g4", "g5"]) | ids)
    if event != "none":
        value["event_id"] = CURRENT if event == "current" else draw(ids)
    # A foreign event id names no tunnel: the action fails whatever it would have done.
    return Action(value, kind, False, own and event != "foreign", event, value.get("group"))


@st.composite
def invalid_actions(draw: st.DrawFn) -> Action:
    """A valid action with exactly one defect, or not an object at all."""
    base = draw(valid_actions())
    value = dict(base.value)
    kind = base.kind
    defects = ["not an object", "unknown type", "no type", "unknown field", "event_id type"]
    if kind == "send":
        defects += ["no payload", "two payloads", "data type", "bad base64", "lone surrogate"]
        defects += ["empty target", "two targets", "all false", "no ids", "bad id in target"]
    elif kind == "close":
        defects += ["code range", "long reason", "reason type", "bad tunnel_id"]
    else:
        defects += ["no group", "bad group", "group type", "bad tunnel_id"]
    defect = draw(st.sampled_from(defects))
    if defect == "not an object":
        return Action(draw(st.sampled_from([1, "send", [], None, True, 2.5])), "other", True)
    if defect == "unknown type":
        value["type"] = draw(st.sampled_from(["push", "SEND", "", "kick", 1]))
    elif defect == "no type":
        del value["type"]
    elif defect == "unknown field":
        value[draw(st.sampled_from(["target", "extra", "Type", "groups"]))] = 1
    elif defect == "event_id type":
        value["event_id"] = draw(st.sampled_from([1, [], {"id": "x"}]))
    elif defect == "no payload":
        value.pop("data", None)
        value.pop("data_base64", None)
    elif defect == "two payloads":
        value["data"], value["data_base64"] = "x", "eA=="
    elif defect == "data type":
        value.pop("data_base64", None)
        value["data"] = draw(st.sampled_from([1, ["x"], {"t": "x"}]))
    elif defect == "bad base64":
        value.pop("data", None)
        value["data_base64"] = draw(st.sampled_from(["not base64!", "eA=", "@@@@", "e A=="]))
    elif defect == "lone surrogate":
        value.pop("data_base64", None)
        value["data"] = "x\udc00y"
    elif defect == "empty target":
        value["to"] = {}
    elif defect == "two targets":
        value["to"] = {"users": ["a"], "groups": ["b"]}
    elif defect == "all false":
        value["to"] = {"all": False}
    elif defect == "no ids":
        value["to"] = {"tunnels": draw(st.sampled_from([[], "tun_x", None]))}
        if value["to"]["tunnels"] is None:
            value["to"] = {"tunnels": None, "users": None}
    elif defect == "bad id in target":
        value["to"] = {draw(st.sampled_from(["tunnels", "users", "groups"])): [draw(bad_ids)]}
    elif defect == "code range":
        value["code"] = draw(st.sampled_from([0, 999, 1001, 1011, 2000, 3000, 3999, 5000, -1]))
    elif defect == "long reason":
        value["reason"] = draw(st.sampled_from(["\u4e2d" * 42, "r" * 124]))
    elif defect == "reason type":
        value["reason"] = draw(st.sampled_from([1, ["r"], {"r": 1}]))
    elif defect == "bad tunnel_id":
        value["tunnel_id"] = draw(bad_ids)
    elif defect == "no group":
        del value["group"]
    elif defect == "bad group":
        value["group"] = draw(bad_ids)
    elif defect == "group type":
        value["group"] = draw(st.sampled_from([1, ["g"], None]))
    return Action(value, kind, True)


# A valid no-op on the own tunnel, for replies of thousands of actions.
LEAVE_G = Action({"type": "leave", "group": "g"}, "leave", False, own=True, group="g")


def nested(depth: int, inner: Any = 1) -> Any:
    """``inner`` inside ``depth`` lists."""
    for _ in range(depth):
        inner = [inner]
    return inner


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _bodies() -> st.SearchStrategy[Body]:
    action_lists = st.lists(st.one_of(valid_actions(), invalid_actions()), max_size=6)
    # Half the replies are action lists, valid and invalid actions mixed, with or without
    # extra top-level keys; the other half any of the odder bodies below.
    action_bodies = st.builds(
        lambda a, extra: Body(tuple(a), tuple(extra.items())),
        action_lists,
        st.dictionaries(st.sampled_from(["note", "version", "id"]), json_values, max_size=2),
    )
    others = st.one_of(
        # Anything at all.
        st.binary(max_size=200).map(lambda b: Body(raw=b)),
        st.text(max_size=100).map(lambda t: Body(raw=t.encode())),
        st.sampled_from([b"", b"  \r\n", b"null", b"[]", b"{}", b"OK", b"<html>ok</html>"]).map(
            lambda b: Body(raw=b)
        ),
        # JSON of the wrong shape: any value, an object whose actions is not a list,
        # a list of actions as the whole body, actions that are any values.
        json_values.map(lambda v: Body(raw=json.dumps(v).encode())),
        json_values.map(lambda v: Body(raw=json.dumps({"actions": v}).encode())),
        action_lists.map(
            lambda a: Body(raw=json.dumps([substitute(x.value, "t", "e") for x in a]).encode())
        ),
        st.lists(json_values, max_size=4).map(
            lambda v: Body(raw=json.dumps({"actions": v}).encode())
        ),
        # Bodies in other encodings (JSON that is UTF-16, or gzip'd) and invalid UTF-8.
        st.just(Body(raw='{"actions": []}'.encode("utf-16"))),
        st.just(Body(raw=b'{"actions": [{"type": "send", "data": "\xff\xfe"}]}')),
        # Deep: an action nested 100 lists deep (valid JSON, invalid action), and
        # bodies nested far beyond what a JSON parser will follow.
        st.just(
            Body(
                (
                    Action(
                        {"type": "send", "data": "x", "to": {"tunnels": nested(100, OWN)}},
                        "send",
                        True,
                    ),
                )
            )
        ),
        st.sampled_from([10_000, 100_000]).map(
            lambda d: Body(raw=b'{"actions": ' + b"[" * d + b"]" * d + b"}")
        ),
        st.sampled_from([10_000, 100_000]).map(lambda d: Body(raw=b"{" + b'"a":{' * d)),
        # Huge: just under and just over the 4 MiB the broker reads, and many actions.
        st.sampled_from([MAX_REPLY_BYTES - 64, MAX_REPLY_BYTES + 1]).map(
            lambda n: Body(raw=b'{"actions": [], "pad": "' + b"x" * n + b'"}')
        ),
        st.integers(1000, 5000).map(
            lambda n: Body(
                (Action({"type": "leave", "group": "g"}, "leave", False, own=True, group="g"),) * n
            )
        ),
    )
    # Not ``action_bodies | others``: one_of flattens, which would make action lists one
    # choice in sixteen.
    return st.booleans().flatmap(lambda lists: action_bodies if lists else others)


header_names = st.sampled_from(
    ["content-type", "content-encoding", "cache-control", "retry-after", "set-cookie"]
) | st.from_regex(r"x-[a-z0-9-]{1,20}", fullmatch=True)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "text/plain",
        "text/html; charset=iso-8859-1",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "json",
    ]
)


@st.composite
def reply_specs(draw: st.DrawFn) -> ReplySpec:
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    if draw(st.booleans()):
        headers.insert(0, ("content-type", draw(content_types)))
    if draw(st.integers(0, 30)) == 0:
        headers.append(("x-huge", "h" * (MAX_REPLY_HEADER_BYTES + 1000)))
    status = draw(st.sampled_from([200, 200, 200, 201, 202, 203, 204, 206, 226, 299]))
    return ReplySpec(status, tuple(headers), draw(_bodies()))

"""Messages between pods, typed, with the one encoder and the one decoder of their wire form.

A pod publishes these on another pod's channel (named tunnels it holds) or on the
broadcast channel (users, groups, everyone: every pod applies them to its own tunnels).
The wire form is JSON with an ``op`` and the sender's node id in ``from``; it is kept
stable so pods of two releases can share a Redis during a rolling upgrade.

``decode`` raises ``MalformedMessage`` for anything it cannot read completely; the
subscriber logs and skips such a message and keeps its subscription (dropping it would
lose the messages published while it re-subscribes).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, cast, get_args

from tunnel_broker.errors import BrokerError
from tunnel_broker.targets import Target, TargetKind

_KINDS = frozenset(get_args(TargetKind))
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class MalformedMessage(BrokerError):
    """A pub/sub message that is not one of ours, or is incomplete."""


@dataclass(frozen=True, slots=True)
class Push:
    """Push a payload to the receiving pod's tunnels of ``target``. ``numbers``, for
    named reliable tunnels: the number Redis gave the push for each id (0: a tunnel of
    raw frames), in ``target.ids`` order (``resumes.py``)."""

    app_id: str
    target: Target
    payload: str | bytes
    numbers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Close:
    app_id: str
    target: Target
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Replace:
    """A newer socket took ``tunnel_id`` over: close the connection ``conn`` (4409)."""

    app_id: str
    tunnel_id: str
    conn: str


@dataclass(frozen=True, slots=True)
class Membership:
    """The tunnel joined or left a group: update the receiving pod's index."""

    app_id: str
    tunnel_id: str
    group: str
    join: bool


@dataclass(frozen=True, slots=True)
class Released:
    """The sender delivered every event it held of ``tunnel_id`` (``order.py``)."""

    app_id: str
    tunnel_id: str


ControlMessage = Push | Close | Replace | Membership | Released


def _head(op: str, app_id: str, target: Target) -> dict[str, Any]:
    return {"op": op, "app": app_id, "kind": target.kind, "ids": list(target.ids)}


def encode(message: ControlMessage, sender: str) -> str:
    wire: dict[str, Any]
    if isinstance(message, Push):
        payload = message.payload
        wire = _head("deliver", message.app_id, message.target)
        wire["payload"] = (
            {"text": payload}
            if isinstance(payload, str)
            else {"b64": base64.b64encode(payload).decode()}
        )
        if message.numbers:
            wire["numbers"] = list(message.numbers)
    elif isinstance(message, Close):
        wire = _head("close", message.app_id, message.target)
        wire.update(code=message.code, reason=message.reason)
    else:
        one = Target("tunnels", (message.tunnel_id,))
        if isinstance(message, Replace):
            wire = _head("replace", message.app_id, one)
            wire["conn"] = message.conn
        elif isinstance(message, Released):
            wire = _head("released", message.app_id, one)
        else:
            wire = _head("join" if message.join else "leave", message.app_id, one)
            wire["group"] = message.group
    wire["from"] = sender
    return _dumps(wire)


def _field(wire: dict[str, Any], name: str, kind: type) -> Any:
    value = wire.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise MalformedMessage(f"{name!r} missing or not a {kind.__name__}")
    return value


def _target(wire: dict[str, Any]) -> Target:
    kind = wire.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise MalformedMessage("'kind' is not a target kind")
    kind = cast(TargetKind, kind)
    ids = _field(wire, "ids", list)
    if not all(isinstance(i, str) for i in ids):
        raise MalformedMessage("'ids' holds a non-string")
    return Target(kind, tuple(ids))


def _single(target: Target) -> str:
    if target.kind != "tunnels" or len(target.ids) != 1:
        raise MalformedMessage("expected exactly one tunnel id")
    return target.ids[0]


def _payload(wire: dict[str, Any]) -> str | bytes:
    raw = _field(wire, "payload", dict)
    if isinstance(raw.get("text"), str):
        return str(raw["text"])
    if isinstance(raw.get("b64"), str):
        try:
            return base64.b64decode(raw["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("'payload.b64' is not base64") from None
    raise MalformedMessage("'payload' has neither 'text' nor 'b64'")


def _numbers(wire: dict[str, Any], target: Target) -> tuple[int, ...]:
    numbers = wire.get("numbers")
    if numbers is None:
        return ()
    if (
        not isinstance(numbers, list)
        or len(numbers) != len(target.ids)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers)
    ):
        raise MalformedMessage("'numbers' is not a number per tunnel id")
    return tuple(numbers)


def decode(data: str | bytes) -> tuple[str, ControlMessage]:
    """``(sender node id, message)``; raises ``MalformedMessage``."""
    try:
        wire = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedMessage("not JSON (or nested too deeply)") from None
    if not isinstance(wire, dict):
        raise MalformedMessage("not a JSON object")
    sender = _field(wire, "from", str)
    op = wire.get("op")
    app_id = _field(wire, "app", str)
    target = _target(wire)
    message: ControlMessage
    if op == "deliver":
        message = Push(app_id, target, _payload(wire), _numbers(wire, target))
    elif op == "close":
        message = Close(app_id, target, _field(wire, "code", int), _field(wire, "reason", str))
    elif op == "replace":
        message = Replace(app_id, _single(target), _field(wire, "conn", str))
    elif op == "released":
        message = Released(app_id, _single(target))
    elif op in ("join", "leave"):
        message = Membership(app_id, _single(target), _field(wire, "group", str), op == "join")
    else:
        raise MalformedMessage(f"unknown op {op!r}")
    return sender, message

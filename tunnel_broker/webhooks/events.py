"""Webhook events, serialised once when they happen.

Each event is encoded to JSON bytes as soon as it is created: delivery only needs the
bytes (to bound buffers and to build the batch body by concatenation), and the parts that
never change for a tunnel (ids, identity, meta) are encoded once per tunnel rather than
once per message.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tunnel_broker.timestamps import iso_time

EventType = Literal["tunnel.connected", "tunnel.message", "tunnel.closed"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# Event and request ids need to be unique, not secret: a random per-process tag and a
# counter, instead of a getrandom() system call per event.
_PROCESS_TAG = os.urandom(8).hex()
_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}{_PROCESS_TAG}{next(_counter):x}"


def tunnel_fragment(
    app_id: str, tunnel_id: str, user_id: str, identity: dict[str, Any], meta: dict[str, Any]
) -> bytes:
    """The JSON members every event of one tunnel repeats, without braces."""
    return _dumps(
        {
            "app_id": app_id,
            "tunnel_id": tunnel_id,
            "user_id": user_id,
            "identity": identity,
            "meta": meta,
        }
    )[1:-1].encode()


@dataclass(slots=True)
class EncodedEvent:
    id: str
    type: EventType
    tunnel_id: str
    body: bytes


def _encode(
    event_type: EventType, fragment: bytes, tunnel_id: str, tail: str, event_id: str = ""
) -> EncodedEvent:
    event_id = event_id or new_id("evt_")
    head = f'{{"id":"{event_id}","type":"{event_type}","time":"{iso_time(time.time())}",'
    body = head.encode() + fragment + tail.encode() + b"}"
    return EncodedEvent(event_id, event_type, tunnel_id, body)


def connected(fragment: bytes, tunnel_id: str) -> EncodedEvent:
    return _encode("tunnel.connected", fragment, tunnel_id, "")


def message(
    fragment: bytes, tunnel_id: str, payload: str | bytes, event_id: str = ""
) -> EncodedEvent:
    """``event_id``: the reliable protocol's (``numbered_id``), the same for a message
    however often its client sends it."""
    if isinstance(payload, str):
        tail = ',"data":' + _dumps(payload)
    else:
        tail = ',"data_base64":"' + base64.b64encode(payload).decode() + '"'
    return _encode("tunnel.message", fragment, tunnel_id, tail, event_id)


def numbered_id(tunnel_id: str, sequences: str, seq: int) -> str:
    """The event id of a reliable tunnel's message ``seq`` of its sequences
    ``sequences``: a message relayed twice (sent again after its pod died before saying
    it had it) reaches the business server with the same id, which it drops by."""
    digest = hashlib.blake2b(f"{tunnel_id}\0{sequences}\0{seq}".encode(), digest_size=12)
    return "evt_" + digest.hexdigest()


def closed(fragment: bytes, tunnel_id: str, code: int, reason: str) -> EncodedEvent:
    return _encode(
        "tunnel.closed", fragment, tunnel_id, f',"code":{code},"reason":{_dumps(reason)}'
    )


def batch_body(events: list[EncodedEvent]) -> bytes:
    return b'{"events":[' + b",".join(e.body for e in events) + b"]}"


# Undelivered events kept across a process's end (``webhooks/handover.py``) are stored as
# text records: tunnel id, event id and type on a line each, then the body. The tunnel id
# comes first so that Redis scripts can read it; ids never contain a newline.
_TYPES: frozenset[str] = frozenset(get_args(EventType))


def to_record(event: EncodedEvent) -> str:
    return f"{event.tunnel_id}\n{event.id}\n{event.type}\n{event.body.decode()}"


def record_bytes(event: EncodedEvent) -> bytes:
    """``to_record``, encoded, without decoding the body first."""
    return f"{event.tunnel_id}\n{event.id}\n{event.type}\n".encode() + event.body


def from_record(record: str) -> EncodedEvent:
    """The event of a record; ``ValueError`` for anything that is not one."""
    tunnel_id, event_id, event_type, body = record.split("\n", 3)
    if event_type not in _TYPES or not tunnel_id or not event_id:
        raise ValueError("not an event record")
    return EncodedEvent(event_id, event_type, tunnel_id, body.encode())  # type: ignore[arg-type]

"""The broker's HTTP API as data: each operation is a ``Call`` that says which request to make
and how to read the answer.

Both clients only execute ``Call`` objects, so every path, body shape and response reader
exists once, and tests can check an operation without any network or event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from business_sdk._exceptions import APIError, TunnelNotConnectedError, ValidationFailedError
from business_sdk._models import (
    CreatedTunnel,
    Message,
    SendResult,
    Session,
    TunnelInfo,
    TunnelPage,
)
from business_sdk._payload import close_fields, encode_data

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API operation.

    ``idempotent`` decides whether a request that may already have reached the broker can be
    sent again after a lost answer: repeating a close or a join is harmless, repeating a send
    would deliver the messages twice. ``recover`` turns an expected error into a value (closing
    a tunnel that is already gone is not a failure for the caller).
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool = True
    recover: Callable[[APIError], T] | None = None


def _segment(value: str) -> str:
    """Quote an id for a path segment so ``user@example`` or ``a:b`` reach the broker intact.

    ``.`` and ``..`` are refused: no quoting keeps them from being read as "this" and
    "parent" segments, and ``leave("..", tid)`` would address ``/v1/tunnels/{tid}``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"ids must be non-empty strings, got {value!r}")
    if value in (".", ".."):
        raise ValueError(f"{value!r} cannot be an id or a group name")
    return quote(value, safe="")


def _seconds(ttl: float | timedelta) -> int:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    return int(seconds)


def _not_connected_is(value: T) -> Callable[[APIError], T]:
    def recover(error: APIError) -> T:
        if isinstance(error, TunnelNotConnectedError):
            return value
        raise error

    return recover


def _ignore(_body: Any) -> None:
    return None


def create_tunnel(
    user_id: str,
    *,
    identity: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    groups: Iterable[str] | None,
    ttl: float | timedelta | None,
) -> Call[CreatedTunnel]:
    body: dict[str, Any] = {"user_id": user_id}
    if identity is not None:
        body["identity"] = dict(identity)
    if meta is not None:
        body["meta"] = dict(meta)
    if groups is not None:
        body["groups"] = [groups] if isinstance(groups, str) else list(groups)
    if ttl is not None:
        body["ttl"] = _seconds(ttl)
    # Minting a token has no effect until a client connects with it, so a retried create
    # at worst leaves an unused URL behind.
    return Call("POST", "/v1/tunnels", CreatedTunnel.from_json, body=body, idempotent=True)


def send(messages: Iterable[Message]) -> Call[SendResult]:
    wire = [{"to": m.to.to_json(), **encode_data(m.data)} for m in messages]
    if not wire:
        raise ValueError("send needs at least one message")
    return Call(
        "POST", "/v1/messages", SendResult.from_json, body={"messages": wire}, idempotent=False
    )


def close_tunnel(tunnel_id: str, *, code: int | None, reason: str | None) -> Call[bool]:
    return Call(
        "DELETE",
        f"/v1/tunnels/{_segment(tunnel_id)}",
        lambda body: bool(body.get("closed", True)),
        body=close_fields(code, reason) or None,
        recover=_not_connected_is(False),
    )


def close_user(user_id: str, *, code: int | None, reason: str | None) -> Call[int]:
    def closed_count(body: Any) -> int:
        count = body["closed"]
        if not isinstance(count, int):
            raise TypeError("'closed' is not an integer")
        return count

    return Call(
        "POST",
        f"/v1/users/{_segment(user_id)}/close",
        closed_count,
        body=close_fields(code, reason) or None,
    )


def _membership(method: str, group: str, tunnel_id: str) -> Call[None]:
    return Call(method, f"/v1/groups/{_segment(group)}/tunnels/{_segment(tunnel_id)}", _ignore)


def join(group: str, tunnel_id: str) -> Call[None]:
    return _membership("PUT", group, tunnel_id)


def leave(group: str, tunnel_id: str) -> Call[None]:
    return _membership("DELETE", group, tunnel_id)


def get_tunnel(tunnel_id: str) -> Call[TunnelInfo | None]:
    return Call(
        "GET",
        f"/v1/tunnels/{_segment(tunnel_id)}",
        TunnelInfo.from_json,
        recover=_not_connected_is(None),
    )


def _page(path: str, limit: int | None, cursor: str | None) -> Call[TunnelPage]:
    params: dict[str, str] = {}
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return Call("GET", path, TunnelPage.from_json, params=params or None)


def user_tunnels_page(user_id: str, *, limit: int | None, cursor: str | None) -> Call[TunnelPage]:
    return _page(f"/v1/users/{_segment(user_id)}/tunnels", limit, cursor)


def group_tunnels_page(group: str, *, limit: int | None, cursor: str | None) -> Call[TunnelPage]:
    return _page(f"/v1/groups/{_segment(group)}/tunnels", limit, cursor)


# --------------------------------------------------------------------------- sessions


def _skey(skey: str) -> str:
    if not isinstance(skey, str):
        raise TypeError(f"an skey is a string, got {type(skey).__name__}")
    return skey


def _no_session_is(value: T) -> Callable[[APIError], T]:
    """An skey that names no live session of this app is an answer, not an error: the broker
    says ``401 session_not_found`` for unknown, expired, revoked and other apps' skeys, and
    ``422`` on the ``skey`` field for strings that cannot be an skey at all (empty, too long).
    Either way a client sent it, so it must not turn into a server error."""

    def recover(error: APIError) -> T:
        if error.code == "session_not_found":
            return value
        if isinstance(error, ValidationFailedError):
            fields = [e.field for e in error.errors]
            if fields and all(f.rsplit(".", 1)[-1] == "skey" for f in fields):
                return value
        raise error

    return recover


def _revoked_count(body: Any) -> int:
    count = body["revoked"]
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError("'revoked' is not an integer")
    return count


def resolve_session(skey: str) -> Call[Session | None]:
    # Resolving renews the session's idle timer, which a repeat does again: safe to retry.
    return Call(
        "POST",
        "/v1/sessions/resolve",
        Session.from_json,
        body={"skey": _skey(skey)},
        recover=_no_session_is(None),
    )


def revoke_session(skey: str) -> Call[int]:
    return Call(
        "POST",
        "/v1/sessions/revoke",
        _revoked_count,
        body={"skey": _skey(skey)},
        recover=_no_session_is(0),
    )


def revoke_user_sessions(openid: str) -> Call[int]:
    if not isinstance(openid, str) or not openid:
        raise ValueError(f"openid must be a non-empty string, got {openid!r}")
    return Call("POST", "/v1/sessions/revoke", _revoked_count, body={"openid": openid})

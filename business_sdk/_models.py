"""What the broker's API answers, as typed values, and the readers that build them.

Readers take the decoded JSON and are strict about the members the contract names (a missing
one raises ``KeyError``/``TypeError``, which the client turns into ``UnexpectedResponseError``)
and tolerant of members it does not know, so a newer broker can add fields without breaking
older SDKs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from business_sdk._payload import Data
from business_sdk._targets import Target


def parse_time(value: Any) -> datetime:
    """ISO-8601 with a ``Z`` or offset, as the broker writes it, to an aware ``datetime``."""
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return parsed


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return [_str(item) for item in value]


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of a batch send: a payload and where it goes."""

    to: Target
    data: Data


@dataclass(frozen=True, slots=True)
class CreatedTunnel:
    """A tunnel handed to a user: give ``connect_url`` to the mini-program before
    ``expires_at``; the tunnel id stays the same across reconnects with the same URL."""

    tunnel_id: str
    connect_url: str
    expires_at: datetime

    @classmethod
    def from_json(cls, body: Any) -> CreatedTunnel:
        return cls(
            tunnel_id=_str(body["tunnel_id"]),
            connect_url=_str(body["connect_url"]),
            expires_at=parse_time(body["expires_at"]),
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the broker did with a send: how many messages it accepted, and which of the tunnel
    ids named in ``Target.tunnels`` targets were not open (so the caller can forget them)."""

    accepted: int
    not_connected: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: Any) -> SendResult:
        accepted = body["accepted"]
        if not isinstance(accepted, int):
            raise TypeError("'accepted' is not an integer")
        return cls(accepted=accepted, not_connected=_str_list(body.get("not_connected", [])))


@dataclass(frozen=True, slots=True)
class TunnelInfo:
    """An open tunnel as presence reports it: who it belongs to and where it is connected."""

    tunnel_id: str
    user_id: str
    identity: Mapping[str, Any]
    meta: Mapping[str, Any]
    groups: Sequence[str]
    connected_at: datetime
    node_id: str

    @classmethod
    def from_json(cls, body: Any) -> TunnelInfo:
        return cls(
            tunnel_id=_str(body["tunnel_id"]),
            user_id=_str(body["user_id"]),
            identity=_dict(body.get("identity")),
            meta=_dict(body.get("meta")),
            groups=_str_list(body.get("groups", [])),
            connected_at=parse_time(body["connected_at"]),
            node_id=str(body.get("node_id", "")),
        )


@dataclass(frozen=True, slots=True)
class TunnelPage:
    """One page of a presence listing; pass ``next_cursor`` back to get the next one."""

    tunnels: list[TunnelInfo]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Any) -> TunnelPage:
        tunnels = body["tunnels"]
        if not isinstance(tunnels, list):
            raise TypeError("'tunnels' is not a list")
        cursor = body.get("next_cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError("'next_cursor' is not a string")
        return cls([TunnelInfo.from_json(t) for t in tunnels], cursor or None)


@dataclass(frozen=True, slots=True)
class Session:
    """A WeChat user logged in through the broker, as ``resolve_session`` reports it.

    ``openid`` (and ``unionid`` when WeChat gave one) were verified by the broker with WeChat;
    ``identity`` is ``{"openid", "unionid"?, "nickName"?, "avatarUrl"?, ...}`` as verified at
    login. ``expires_at`` is when the session ends unless it is used again (each use renews
    it, up to the session's absolute lifetime).
    """

    app_id: str
    openid: str
    unionid: str | None
    identity: Mapping[str, Any]
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_json(cls, body: Any) -> Session:
        unionid = body.get("unionid")
        return cls(
            app_id=_str(body["app_id"]),
            openid=_str(body["openid"]),
            unionid=None if unionid is None else _str(unionid),
            identity=_dict(body.get("identity")),
            created_at=parse_time(body["created_at"]),
            expires_at=parse_time(body["expires_at"]),
        )

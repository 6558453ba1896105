"""Request and response schemas of the HTTP API.

Declared once with pydantic, they validate input (errors name the field) and produce the
JSON Schema served in /openapi.json. The parts webhook actions share (ids, targets,
payloads) are in ``tunnel_broker.shapes``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from tunnel_broker.shapes import (
    CloseFields,
    GroupName,
    Id,
    Payload,
    Strict,
    TargetModel,
)


class OutgoingMessage(Payload):
    to: TargetModel


class MessagesRequest(Strict):
    messages: Annotated[list[OutgoingMessage], Field(min_length=1, max_length=1000)]


class MessagesResponse(BaseModel):
    accepted: int
    not_connected: list[str]


class CreateTunnelRequest(Strict):
    user_id: Id
    identity: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    groups: Annotated[list[GroupName], Field(max_length=10_000)] = Field(default_factory=list)
    ttl: Annotated[int, Field(ge=10, le=30 * 86400)] | None = None


class SessionTunnelRequest(Strict):
    """What a mini-program may choose about its own tunnel: only how long the URL lives."""

    ttl: Annotated[int, Field(ge=10, le=30 * 86400)] | None = None


class SkeyRequest(Strict):
    skey: Annotated[str, Field(min_length=1, max_length=256)]


class RevokeRequest(Strict):
    """One session by its skey, or every session of a user by openid."""

    skey: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    openid: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RevokeRequest:
        if (self.skey is None) == (self.openid is None):
            raise ValueError("give exactly one of 'skey' or 'openid'")
        return self


class CreateTunnelResponse(BaseModel):
    tunnel_id: str
    connect_url: str
    expires_at: str


class CloseRequest(CloseFields):
    pass


class TunnelInfo(BaseModel):
    tunnel_id: str
    user_id: str
    identity: dict[str, Any]
    meta: dict[str, Any]
    groups: list[str]
    connected_at: str
    node_id: str
    state: Literal["open", "resumable"]


class TunnelPage(BaseModel):
    tunnels: list[TunnelInfo]
    next_cursor: str | None

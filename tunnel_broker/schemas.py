"""Request, response and webhook-action schemas.

Declared once with pydantic, they validate input (errors name the field) and produce the
JSON Schema served in /openapi.json.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunnel_broker.closecodes import is_business_close_code
from tunnel_broker.targets import Target

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s/]+$")]
GroupName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s/]+$")]
MAX_TARGET_IDS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetModel(_Strict):
    """Exactly one of ``tunnels``, ``users``, ``groups`` or ``all: true``."""

    tunnels: Annotated[list[Id], Field(min_length=1, max_length=MAX_TARGET_IDS)] | None = None
    users: Annotated[list[Id], Field(min_length=1, max_length=MAX_TARGET_IDS)] | None = None
    groups: Annotated[list[GroupName], Field(min_length=1, max_length=MAX_TARGET_IDS)] | None = None
    all: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetModel:
        given = [k for k in ("tunnels", "users", "groups", "all") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'tunnels', 'users', 'groups' or 'all'")
        return self

    def to_target(self) -> Target:
        if self.tunnels is not None:
            return Target("tunnels", tuple(self.tunnels))
        if self.users is not None:
            return Target("users", tuple(self.users))
        if self.groups is not None:
            return Target("groups", tuple(self.groups))
        return Target("all")


class _Payload(_Strict):
    data: str | None = None
    data_base64: str | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> _Payload:
        if (self.data is None) == (self.data_base64 is None):
            raise ValueError("give exactly one of 'data' or 'data_base64'")
        if self.data_base64 is not None:
            try:
                base64.b64decode(self.data_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("'data_base64' is not valid base64") from None
        return self

    def payload(self) -> str | bytes:
        if self.data is not None:
            return self.data
        assert self.data_base64 is not None
        return base64.b64decode(self.data_base64)


class OutgoingMessage(_Payload):
    to: TargetModel


class MessagesRequest(_Strict):
    messages: Annotated[list[OutgoingMessage], Field(min_length=1, max_length=1000)]


class MessagesResponse(BaseModel):
    accepted: int
    not_connected: list[str]


class CreateTunnelRequest(_Strict):
    user_id: Id
    identity: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    groups: Annotated[list[GroupName], Field(max_length=10_000)] = Field(default_factory=list)
    ttl: Annotated[int, Field(ge=10, le=30 * 86400)] | None = None


class SessionTunnelRequest(_Strict):
    """What a mini-program may choose about its own tunnel: only how long the URL lives."""

    ttl: Annotated[int, Field(ge=10, le=30 * 86400)] | None = None


class SkeyRequest(_Strict):
    skey: Annotated[str, Field(min_length=1, max_length=256)]


class RevokeRequest(_Strict):
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


def _check_close_code(code: int | None) -> None:
    if code is not None and not is_business_close_code(code):
        raise ValueError("'code' must be 1000 or within 4000-4999")


class CloseRequest(_Strict):
    code: int | None = None
    reason: Annotated[str, Field(max_length=120)] = ""

    @model_validator(mode="after")
    def _code_range(self) -> CloseRequest:
        _check_close_code(self.code)
        return self


class TunnelInfo(BaseModel):
    tunnel_id: str
    user_id: str
    identity: dict[str, Any]
    meta: dict[str, Any]
    groups: list[str]
    connected_at: str
    node_id: str


class TunnelPage(BaseModel):
    tunnels: list[TunnelInfo]
    next_cursor: str | None


# ---- webhook response actions -------------------------------------------------------


class _ActionBase(_Strict):
    event_id: str | None = None


class SendAction(_ActionBase, _Payload):
    type: Literal["send"]
    to: TargetModel | None = None


class CloseAction(_ActionBase):
    type: Literal["close"]
    tunnel_id: Id | None = None
    code: int | None = None
    reason: Annotated[str, Field(max_length=120)] = ""

    @model_validator(mode="after")
    def _code_range(self) -> CloseAction:
        _check_close_code(self.code)
        return self


class GroupAction(_ActionBase):
    type: Literal["join", "leave"]
    tunnel_id: Id | None = None
    group: GroupName


Action = Annotated[SendAction | CloseAction | GroupAction, Field(discriminator="type")]


class WebhookReply(BaseModel):
    """The body a receiver may answer with; unknown top-level keys are ignored so
    receivers can add their own diagnostics."""

    actions: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)

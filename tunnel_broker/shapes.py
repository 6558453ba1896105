"""JSON shapes shared by the HTTP API and the webhook actions, declared once with pydantic:
ids, group names, targets, payloads and close codes."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tunnel_broker.targets import Target

MAX_TARGET_IDS = 10_000
# A close frame holds 125 bytes: the code's two and at most 123 of reason, in UTF-8.
MAX_REASON_BYTES = 123
# White space by Python's rules and by JavaScript's (the document's patterns are ECMA-262
# regular expressions), spelt out so that both read the same rule.
_SPACE = "\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
ID_CHARS_PATTERN = f"^[^{_SPACE}/]+$"
_ID_PATTERN = re.compile(f"[^{_SPACE}/]{{1,128}}\\Z")
# The rule as JSON Schema, for path parameters of the OpenAPI document.
ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": ID_CHARS_PATTERN,
    "not": {"enum": [".", ".."]},
}


def check_id(value: str) -> str:
    """Ids and group names end up in URL paths (``/v1/groups/{group}/...``): no white
    space, no ``/``, and not ``.`` or ``..``, which HTTP clients resolve as path steps."""
    if not _ID_PATTERN.match(value) or value in (".", ".."):
        raise ValueError("1 to 128 characters, no white space or '/', not '.' or '..'")
    _check_text(value)
    return value


def is_unicode(value: str) -> bool:
    """Whether ``value`` can be sent and signed: JSON's ``"\\udc00"`` decodes to a lone
    surrogate that UTF-8 cannot encode."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: str) -> None:
    if not is_unicode(value):
        raise ValueError("must be valid Unicode text (no lone surrogates)")


def check_reason(value: str) -> str:
    _check_text(value)
    size = len(value.encode("utf-8"))
    if size > MAX_REASON_BYTES:
        raise ValueError(f"{size} bytes of UTF-8; a close reason holds at most {MAX_REASON_BYTES}")
    return value


Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=ID_CHARS_PATTERN,
        json_schema_extra={"not": {"enum": [".", ".."]}},
    ),
    AfterValidator(check_id),
]
GroupName = Id
Reason = Annotated[
    str,
    Field(max_length=MAX_REASON_BYTES, description="At most 123 bytes of UTF-8."),
    AfterValidator(check_reason),
]


class Strict(BaseModel):
    """Unknown fields are errors: a misspelt option must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TargetModel(Strict):
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


class Payload(Strict):
    """Text as ``data`` or binary as ``data_base64``."""

    data: str | None = None
    data_base64: str | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> Payload:
        if (self.data is None) == (self.data_base64 is None):
            raise ValueError("give exactly one of 'data' or 'data_base64'")
        if self.data is not None:
            _check_text(self.data)
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


def is_business_close_code(code: int) -> bool:
    """Codes a business server may choose: 1000 or the private range 4000-4999; the
    others are the protocol's or the broker's own (``tunnels.closecodes``)."""
    return code == 1000 or 4000 <= code <= 4999


class CloseFields(Strict):
    """How a business server closes tunnels: an optional code of its own range and a
    short reason (API ``close`` bodies and ``close`` actions alike)."""

    code: int | None = None
    reason: Reason = ""

    @model_validator(mode="after")
    def _code_range(self) -> CloseFields:
        if self.code is not None and not is_business_close_code(self.code):
            raise ValueError("'code' must be 1000 or within 4000-4999")
        return self

"""jscode2session's request and answer, without the network.

``GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`` answers
``{"openid", "session_key", "unionid"?}`` or ``{"errcode", "errmsg"}``, always as HTTP 200 and
with a ``text/plain`` content type, so the body is parsed whatever the headers say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tunnel_broker.wechat.errors import (
    InvalidCode,
    UnexpectedResponse,
    WeChatUnavailable,
    error_for_errcode,
)
from tunnel_broker.wechat.redaction import REDACTED, redact_query_secrets

JSCODE2SESSION_PATH = "/sns/jscode2session"
MAX_CODE_LENGTH = 128
"""Real codes are 32 characters; longer input is refused before it reaches WeChat."""
MAX_ERRMSG_LENGTH = 200


@dataclass(frozen=True, slots=True, repr=False)
class Code2Session:
    """A successful exchange. ``session_key`` is a secret: it never appears in ``repr``."""

    openid: str
    session_key: str
    unionid: str | None = None

    def __repr__(self) -> str:
        return (
            f"Code2Session(openid={self.openid!r}, session_key={REDACTED!r}, "
            f"unionid={self.unionid!r})"
        )


def check_code(code: str, *, appid: str) -> None:
    """Refuse, without asking WeChat, a code that cannot be valid (empty or oversized)."""
    if not code:
        raise InvalidCode(41008, "missing code (refused locally)", appid=appid)
    if len(code) > MAX_CODE_LENGTH or not code.isprintable():
        raise InvalidCode(40029, "invalid code (refused locally)", appid=appid)


def request_params(appid: str, secret: str, code: str) -> dict[str, str]:
    return {
        "appid": appid,
        "secret": secret,
        "js_code": code,
        "grant_type": "authorization_code",
    }


def parse_response(
    status_code: int,
    body: bytes,
    *,
    appid: str,
    content_type: str = "",
    hide: Iterable[str] = (),
) -> Code2Session:
    """The session in a jscode2session answer, or the precise ``Code2SessionError``.

    ``hide`` lists strings (the secret, the code) to blank out of WeChat's errmsg should it
    ever echo them. The body itself never goes into an error: a truncated success would
    carry the session_key.
    """
    try:
        answer: Any = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        what = f"HTTP {status_code} with {len(body)} bytes of {content_type or 'no content type'}"
        if status_code >= 500:
            raise WeChatUnavailable(f"jscode2session answered {what}")
        raise UnexpectedResponse(
            f"jscode2session answered {what}, not a JSON object", status_code=status_code
        )

    errcode = answer.get("errcode", 0)
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        raise UnexpectedResponse(
            "jscode2session answered a non-integer errcode", status_code=status_code
        )
    if errcode != 0:
        errmsg = answer.get("errmsg")
        errmsg = _clean_errmsg(errmsg if isinstance(errmsg, str) else "", hide)
        raise error_for_errcode(errcode, errmsg, appid=appid)
    if status_code != 200:
        raise UnexpectedResponse(
            f"jscode2session answered HTTP {status_code} without an errcode",
            status_code=status_code,
        )

    openid = answer.get("openid")
    session_key = answer.get("session_key")
    unionid = answer.get("unionid")
    if not isinstance(openid, str) or not openid:
        raise UnexpectedResponse("jscode2session answer lacks openid", status_code=status_code)
    if not isinstance(session_key, str) or not session_key:
        raise UnexpectedResponse("jscode2session answer lacks session_key", status_code=status_code)
    if unionid is not None and not isinstance(unionid, str):
        raise UnexpectedResponse(
            "jscode2session answer has a non-string unionid", status_code=status_code
        )
    return Code2Session(openid=openid, session_key=session_key, unionid=unionid or None)


def _clean_errmsg(errmsg: str, hide: Iterable[str]) -> str:
    for value in hide:
        if value:
            errmsg = errmsg.replace(value, REDACTED)
    errmsg = redact_query_secrets(errmsg)
    if len(errmsg) > MAX_ERRMSG_LENGTH:
        errmsg = errmsg[:MAX_ERRMSG_LENGTH] + "..."
    return errmsg

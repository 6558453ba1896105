"""The simulated WeChat backend: apps, simulated users, login codes and injected faults.

No HTTP here; ``app`` serves this state. Behaviour copied from WeChat:

- a code is single-use (second exchange: 40163) and expires after 5 minutes (then: 40029);
- a code belongs to one app (exchanged with another appid: 40029);
- an unknown appid answers 40013, a wrong secret 40125, missing parameters 41002/41004/41008;
- every login mints a fresh session_key, which signs rawData and encrypts encryptedData and is
  what jscode2session later returns for that code;
- openid is per (app, user); unionid is per user, the same across apps;
- errmsg ends with ``, rid: ...`` as WeChat's do, so clients must not match on errmsg.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tunnel_broker.wechat.crypto import encrypt_user_data, sign_raw_data

CODE_TTL_SECONDS = 300.0
CODE_ALPHABET = string.ascii_letters + string.digits

ERRMSGS: dict[int, str] = {
    -1: "system error",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
}

PROFILE_DEFAULTS: dict[str, str | int] = {
    "nickName": "WeChat User",
    "gender": 0,
    "language": "zh_CN",
    "city": "",
    "province": "",
    "country": "",
    "avatarUrl": "",
}


@dataclass(frozen=True, slots=True)
class SimulatedLogin:
    """What a mini-program would hold after ``wx.login`` and ``wx.getUserInfo``."""

    code: str
    raw_data: str
    signature: str
    encrypted_data: str
    iv: str
    openid: str
    unionid: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "rawData": self.raw_data,
            "signature": self.signature,
            "encryptedData": self.encrypted_data,
            "iv": self.iv,
            "openid": self.openid,
            "unionid": self.unionid,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer of the simulated API: WeChat always says 200 and ``text/plain``."""

    body: str
    status: int = 200


@dataclass(slots=True)
class _PendingCode:
    appid: str
    openid: str
    unionid: str | None
    session_key: str
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class _Fault:
    answer: Answer
    remaining: int


def simulated_openid(appid: str, user: str) -> str:
    """A stable, WeChat-looking openid (28 characters) for ``user`` in ``appid``."""
    return _wechat_id(f"openid|{appid}|{user}")


def simulated_unionid(user: str) -> str:
    """A stable unionid for ``user``, the same in every app."""
    return _wechat_id(f"unionid|{user}")


def new_session_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def error_answer(errcode: int, errmsg: str | None = None) -> Answer:
    message = errmsg if errmsg is not None else ERRMSGS.get(errcode, "simulated error")
    rid = "-".join(secrets.token_hex(4) for _ in range(3))
    return _json_answer({"errcode": errcode, "errmsg": f"{message}, rid: {rid}"})


class WeChatSimulator:
    """The whole simulated backend. ``clock`` gives wall-clock seconds (tests may fake it)."""

    def __init__(
        self,
        apps: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        code_ttl: float = CODE_TTL_SECONDS,
    ) -> None:
        if not apps:
            raise ValueError("the simulator needs at least one appid and its secret")
        self.apps = dict(apps)
        self.clock = clock
        self.code_ttl = code_ttl
        self._codes: dict[str, _PendingCode] = {}
        self._faults: deque[_Fault] = deque()

    def __repr__(self) -> str:
        return f"WeChatSimulator(appids={sorted(self.apps)!r})"

    def mint_login(
        self,
        appid: str,
        *,
        user: str | None = None,
        openid: str | None = None,
        unionid: str | None = None,
        with_unionid: bool = True,
        profile: Mapping[str, str | int] | None = None,
    ) -> SimulatedLogin:
        """Log a simulated user in: a fresh code, session_key, and data signed/encrypted with it.

        Give ``user`` (openid and unionid derive from it) or ``openid``, or both.
        Raises ``KeyError`` for an unknown appid and ``ValueError`` for no user nor openid.
        """
        if appid not in self.apps:
            raise KeyError(appid)
        if not user and not openid:
            raise ValueError("give a user name or an openid")
        seed = user or openid or ""
        openid = openid or simulated_openid(appid, seed)
        unionid = (unionid or simulated_unionid(seed)) if with_unionid else None
        user_info: dict[str, str | int] = {
            **PROFILE_DEFAULTS,
            **({"nickName": user} if user else {}),
        }
        user_info.update(profile or {})

        now = self.clock()
        self._forget_expired_codes(now)
        session_key = new_session_key()
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(32))
        self._codes[code] = _PendingCode(appid, openid, unionid, session_key, now + self.code_ttl)

        raw_data = json.dumps(user_info, ensure_ascii=False, separators=(",", ":"))
        decrypted: dict[str, Any] = {"openId": openid, **user_info}
        if unionid is not None:
            decrypted["unionId"] = unionid
        encrypted = encrypt_user_data(decrypted, session_key, appid, timestamp=int(now))
        return SimulatedLogin(
            code=code,
            raw_data=raw_data,
            signature=sign_raw_data(raw_data, session_key),
            encrypted_data=encrypted.encrypted_data,
            iv=encrypted.iv,
            openid=openid,
            unionid=unionid,
        )

    def inject_fault(self, answer: Answer, *, times: int = 1) -> None:
        """Answer the next ``times`` jscode2session calls with ``answer``, codes untouched."""
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault(answer, times))

    def inject_errcode(self, errcode: int, *, times: int = 1) -> None:
        """E.g. ``inject_errcode(-1, times=2)``: busy twice, then normal service."""
        self.inject_fault(error_answer(errcode), times=times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def jscode2session(self, params: Mapping[str, str]) -> Answer:
        """Answer ``GET /sns/jscode2session`` for these query parameters."""
        if self._faults:
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.popleft()
            return fault.answer

        appid = params.get("appid", "")
        secret = params.get("secret", "")
        code = params.get("js_code", "")
        if not appid:
            return error_answer(41002)
        if not secret:
            return error_answer(41004)
        if not code:
            return error_answer(41008)
        if params.get("grant_type") != "authorization_code":
            return error_answer(40002)
        expected_secret = self.apps.get(appid)
        if expected_secret is None:
            return error_answer(40013)
        if not hmac.compare_digest(expected_secret.encode(), secret.encode()):
            return error_answer(40125)

        pending = self._codes.get(code)
        if pending is None or pending.appid != appid or pending.expires_at <= self.clock():
            return error_answer(40029)
        if pending.used:
            return error_answer(40163)
        pending.used = True
        answer: dict[str, str] = {"session_key": pending.session_key, "openid": pending.openid}
        if pending.unionid is not None:
            answer["unionid"] = pending.unionid
        return _json_answer(answer)

    def _forget_expired_codes(self, now: float) -> None:
        expired = [code for code, pending in self._codes.items() if pending.expires_at <= now]
        for code in expired:
            del self._codes[code]


def _wechat_id(seed: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[:27]


def _json_answer(payload: Mapping[str, object]) -> Answer:
    return Answer(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))

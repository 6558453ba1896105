"""The Wafer 1 auth server (``POST /wafer/{app_id}/auth``), backed by the broker's WeChat
sessions: what ``qcloud-weapp-server-sdk``'s ``LoginService`` calls as ``AuthServerUrl``.

A Wafer 1 business server never talks to WeChat: it hands the client's login headers to
the auth server (``qcloud.cam.id_skey``: code, encrypted data, iv) and later checks the
session the client presents (``qcloud.cam.auth``: id, skey). Requests are
``{"version": 1, "componentName": "MA", "interface": {"interfaceName", "para"}}`` and
answers HTTP 200 ``{"returnCode", "returnMessage", "returnData"}``; 60011 (session
expired) and 60012 (WeChat refused the login) make the SDK tell the client to log in again.

The interface was unauthenticated in Wafer, and stays so: a login needs a fresh
``wx.login`` code (as the public login endpoint does), and a check answers only to whoever
holds the session. Both spend the app's login budget. The session's ``id`` is derived
from its skey (never the skey itself), so the pair is checked together.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.errors import ApiError
from tunnel_broker.http.login import log_in, wechat_app
from tunnel_broker.http.requests import charge_login, node_of, read_json

OK = 0
BAD_REQUEST = 1
UNKNOWN_INTERFACE = 2
SESSION_EXPIRED = 60011
WECHAT_REFUSED = 60012
UNAVAILABLE = 5003

_WECHAT_REFUSALS = {"wechat_invalid_code", "invalid_user_data"}
_TEMPORARY = {"wechat_unavailable", "wechat_rate_limited", "backend_unavailable", "rate_limited"}


def session_id(skey: str) -> str:
    """The non-secret half of a Wafer 1 session (``X-WX-Id``)."""
    return hashlib.sha256(b"wafer1-session-id\0" + skey.encode()).hexdigest()[:32]


def _answer(code: int, message: str, data: Any = None) -> Response:
    body: dict[str, Any] = {"returnCode": code, "returnMessage": message}
    if data is not None:
        body["returnData"] = data
    return JSONResponse(body)


def _strings(para: Any, *names: str) -> list[str]:
    if not isinstance(para, dict):
        raise ValueError("para must be an object")
    values = [para.get(name) for name in names]
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"para needs {', '.join(names)} (non-empty strings)")
    return [str(v) for v in values]


async def auth(request: Request) -> Response:
    node = node_of(request)
    try:
        app = wechat_app(node, request.path_params["app_id"])
        charge_login(request, node, app)
        body = await read_json(request, node)
        interface = body.get("interface") if isinstance(body, dict) else None
        name = interface.get("interfaceName") if isinstance(interface, dict) else None
        para = interface.get("para") if isinstance(interface, dict) else None
        if name == "qcloud.cam.id_skey":
            code, encrypted, iv = _strings(para, "code", "encrypt_data", "iv")
            done = await log_in(node, app, {"code": code, "encrypted_data": encrypted, "iv": iv})
            data = {"id": session_id(done.skey), "skey": done.skey, "user_info": done.userinfo}
            return _answer(OK, "OK", data)
        if name == "qcloud.cam.auth":
            given_id, skey = _strings(para, "id", "skey")
            found = await node.sessions.resolve(skey, app_id=app.id)
            if found is None or not hmac.compare_digest(session_id(skey), given_id):
                return _answer(SESSION_EXPIRED, "session expired or unknown: log in again")
            identity = found[0].identity
            user_info = {"openId": identity["openid"]}
            if "unionid" in identity:
                user_info["unionId"] = identity["unionid"]
            user_info.update({k: v for k, v in identity.items() if k not in ("openid", "unionid")})
            return _answer(OK, "OK", {"user_info": user_info})
        return _answer(UNKNOWN_INTERFACE, "interfaceName is qcloud.cam.id_skey or qcloud.cam.auth")
    except ValueError as exc:
        return _answer(BAD_REQUEST, str(exc))
    except ApiError as exc:
        if exc.code in _WECHAT_REFUSALS:
            return _answer(WECHAT_REFUSED, exc.detail)
        if exc.code in _TEMPORARY:
            return _answer(UNAVAILABLE, exc.detail)
        return _answer(BAD_REQUEST, exc.detail)


routes = [Route("/wafer/{app_id}/auth", auth, methods=["POST"])]

"""WeChat login on the broker, and what sessions are good for afterwards.

Mini-programs call ``/v1/wechat/{app}/login`` exactly as the Wafer client SDKs do
(headers ``X-WX-Code``, ``X-WX-Encrypted-Data``, ``X-WX-IV``; or a JSON body) and get an
``skey``. Business servers resolve an skey to the verified user
(``POST /v1/sessions/resolve``), and, where the app allows it, a mini-program opens its own
tunnel with ``POST /v1/tunnels`` and ``X-WX-Skey`` (routed in ``api.py``): the tunnel's
identity is then the WeChat user the broker verified, so every webhook's
``identity.openid`` can be trusted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.backend.sessions import Session
from tunnel_broker.errors import ApiError
from tunnel_broker.http.connect_urls import check_tunnel_quota, mint_tunnel
from tunnel_broker.http.requests import (
    authenticate,
    charge_login,
    charge_request,
    node_of,
    parse_body,
    read_json,
)
from tunnel_broker.http.schemas import (
    CreateTunnelRequest,
    RevokeRequest,
    SessionTunnelRequest,
    SkeyRequest,
)
from tunnel_broker.node import Node
from tunnel_broker.timestamps import iso_time
from tunnel_broker.wechat import (
    CodeAlreadyUsed,
    InvalidAppCredentials,
    InvalidCode,
    RateLimited,
    UserDataError,
    WeChatError,
    decrypt_user_data,
    verify_raw_data,
)

logger = logging.getLogger("tunnel_broker.http.login")

SKEY_HEADER = "x-wx-skey"
WAFER1_MAGIC = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
PROFILE_FIELDS = ("nickName", "avatarUrl", "gender", "city", "province", "country", "language")


def _utf8_header(value: str) -> str:
    """A header as the client sent it: ``wx.request`` sends UTF-8 (``X-WX-Raw-Data`` with
    a Chinese nickname), which the server's latin-1 reading turns into other characters,
    and the signature over the raw data would not match."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _login_inputs(headers: Any, body: Any) -> dict[str, str]:
    fields = {
        "code": ("x-wx-code", "code"),
        "encrypted_data": ("x-wx-encrypted-data", "encryptedData"),
        "iv": ("x-wx-iv", "iv"),
        "raw_data": ("x-wx-raw-data", "rawData"),
        "signature": ("x-wx-signature", "signature"),
    }
    found: dict[str, str] = {}
    for name, (header, key) in fields.items():
        value = headers.get(header)
        if value is not None:
            value = _utf8_header(value)
        if value is None and isinstance(body, dict):
            value = body.get(key, body.get(name))
        if value is not None:
            if not isinstance(value, str):
                raise ApiError.invalid(key, "must be a string", f"{key} must be a string")
            found[name] = value
    if not found.get("code"):
        raise ApiError.invalid(
            "code", "required", "send the wx.login code as X-WX-Code (or 'code' in a JSON body)"
        )
    return found


def _map_wechat_error(app: App, exc: WeChatError) -> ApiError:
    if isinstance(exc, InvalidCode | CodeAlreadyUsed):
        return ApiError("wechat_invalid_code", "call wx.login again for a fresh code")
    if isinstance(exc, UserDataError):
        return ApiError("invalid_user_data", "user data did not verify; call wx.login again")
    if isinstance(exc, RateLimited):
        return ApiError("wechat_rate_limited", "WeChat's quota for this app is used up")
    if isinstance(exc, InvalidAppCredentials):
        logger.error("app %s: WeChat rejected its appid or secret", app.id)
        return ApiError("wechat_misconfigured", "the operator must fix this app's WeChat keys")
    if exc.temporary:
        return ApiError("wechat_unavailable", "WeChat is busy or unreachable; try again")
    return ApiError("wechat_error", "WeChat answered unexpectedly")


@dataclass(frozen=True, slots=True)
class LoggedIn:
    skey: str
    session: Session
    userinfo: dict[str, Any]  # as the Wafer SDKs show it: openId, unionId?, profile
    expires_at: str


async def log_in(node: Node, app: App, inputs: dict[str, str]) -> LoggedIn:
    """Exchange a ``wx.login`` code (and verify the user data sent with it) for a new
    session of ``app``; ``ApiError`` if WeChat or the data say no."""
    assert app.wechat_appid is not None and app.wechat_secret is not None
    client = node.wechat_client(app.wechat_api_base_url)
    try:
        c2s = await client.code_to_session(app.wechat_appid, app.wechat_secret, inputs["code"])
        profile: dict[str, Any] = {}
        unionid = c2s.unionid
        if "raw_data" in inputs or "signature" in inputs:
            profile = verify_raw_data(
                inputs.get("raw_data", ""), inputs.get("signature", ""), c2s.session_key
            )
        if "encrypted_data" in inputs or "iv" in inputs:
            decrypted = decrypt_user_data(
                inputs.get("encrypted_data", ""),
                inputs.get("iv", ""),
                c2s.session_key,
                app.wechat_appid,
                expected_openid=c2s.openid,
            )
            unionid = unionid or decrypted.get("unionId")
            profile = decrypted
    except WeChatError as exc:
        raise _map_wechat_error(app, exc) from None
    limits = app.limits
    shown = {k: profile[k] for k in PROFILE_FIELDS if k in profile}
    if shown:
        await node.sessions.keep_profile(app.id, c2s.openid, shown, limits.session_lifetime_seconds)
    else:  # the code alone: the profile of the user's last full login, if any
        shown = await node.sessions.profile(app.id, c2s.openid) or {}
    identity: dict[str, Any] = {"openid": c2s.openid}
    if unionid:
        identity["unionid"] = unionid
    identity.update(shown)
    now = time.time()
    session = Session(
        app.id,
        c2s.openid,
        unionid,
        identity,
        now,
        now + limits.session_lifetime_seconds,
        limits.session_idle_seconds,
    )
    skey = await node.sessions.create(session, limits.max_sessions_per_openid)
    node.usage.of(app.id).logins += 1  # usage metering: successful logins only
    userinfo = {"openId": c2s.openid, **({"unionId": unionid} if unionid else {}), **shown}
    return LoggedIn(skey, session, userinfo, iso_time(session.ends_at(now + session.idle_seconds)))


def wechat_app(node: Node, app_id: str) -> App:
    app = node.apps.get(app_id)
    if app is None or app.wechat_appid is None or app.wechat_secret is None:
        raise ApiError("wechat_not_configured", f"no WeChat login for app {app_id!r}")
    return app


async def login(request: Request) -> Response:
    node = node_of(request)
    try:
        app = wechat_app(node, request.path_params["app_id"])
        charge_login(request, node, app)
        body = await read_json(request, node, optional=True) if request.method == "POST" else None
        done = await log_in(node, app, _login_inputs(request.headers, body))
    except ApiError as exc:
        # wafer-client-sdk (Wafer 1) reads a failure only in its own shape, and without it
        # blames the server for not using the SDK: the problem carries that shape too.
        wafer1 = {WAFER1_MAGIC: 1, "error": "ERR_LOGIN_FAILED", "message": exc.detail}
        raise ApiError(exc.code, exc.detail, {**exc.extra, **wafer1}, exc.headers) from None
    skey, userinfo = done.skey, done.userinfo
    return JSONResponse(
        {
            # Our own shape.
            "skey": skey,
            "identity": done.session.identity,
            "expires_at": done.expires_at,
            # What wafer2-client-sdk reads.
            "code": 0,
            "data": {"skey": skey, "userinfo": userinfo},
            # What wafer-client-sdk (1.x protocol) reads.
            WAFER1_MAGIC: 1,
            "session": {"id": skey, "skey": skey, "userInfo": userinfo},
        }
    )


async def logout(request: Request) -> Response:
    node = node_of(request)
    skey = request.headers.get(SKEY_HEADER, "")
    if not skey:
        raise ApiError("session_not_found", "send the session as X-WX-Skey")
    return JSONResponse({"revoked": await node.sessions.revoke(skey)})


async def _session_of(node: Node, skey: str, app_id: str | None = None) -> tuple[Session, float]:
    found = await node.sessions.resolve(skey, app_id=app_id) if skey else None
    if found is None:
        raise ApiError("session_not_found", "log in again (wx.login)")
    return found


async def resolve_session(request: Request) -> Response:
    """The Wafer "check" step, for business servers: who is this skey?"""
    node = node_of(request)
    app = authenticate(request, node)
    body = parse_body(SkeyRequest, await read_json(request, node))
    session, idle_until = await _session_of(node, body.skey, app.id)
    public = session.public(idle_until)
    public["created_at"] = iso_time(public["created_at"])
    public["expires_at"] = iso_time(public["expires_at"])
    return JSONResponse(public)


async def revoke_sessions(request: Request) -> Response:
    node = node_of(request)
    app = authenticate(request, node)
    body = parse_body(RevokeRequest, await read_json(request, node))
    if body.openid is not None:
        return JSONResponse({"revoked": await node.sessions.revoke_user(app.id, body.openid)})
    assert body.skey is not None
    if await node.sessions.resolve(body.skey, app_id=app.id) is None:
        return JSONResponse({"revoked": 0})
    return JSONResponse({"revoked": int(await node.sessions.revoke(body.skey))})


async def create_session_tunnel(request: Request, node: Node) -> Response:
    """``POST /v1/tunnels`` with ``X-WX-Skey``: a mini-program's own tunnel, whose user
    and identity come from the verified session, never from the request."""
    session, _ = await _session_of(node, request.headers.get(SKEY_HEADER, ""))
    app = node.apps.get(session.app_id)
    if app is None:
        raise ApiError("session_not_found", "log in again (wx.login)")
    if not app.allow_session_tunnels:
        raise ApiError("session_tunnels_disabled", "ask the business server for a tunnel")
    raw = await read_json(request, node, optional=True)
    body = parse_body(SessionTunnelRequest, raw if raw is not None else {})
    charge_request(node, app)
    await check_tunnel_quota(node, app)
    return mint_tunnel(
        node,
        app,
        CreateTunnelRequest(user_id=session.openid, identity=session.identity, ttl=body.ttl),
    )


routes = [
    Route("/v1/wechat/{app_id}/login", login, methods=["GET", "POST"]),
    Route("/v1/wechat/{app_id}/logout", logout, methods=["POST"]),
    Route("/v1/sessions/resolve", resolve_session, methods=["POST"]),
    Route("/v1/sessions/revoke", revoke_sessions, methods=["POST"]),
]

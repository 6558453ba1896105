"""The simulator's HTTP face: WeChat's jscode2session plus developer endpoints.

- ``GET /sns/jscode2session?appid&secret&js_code&grant_type`` — as WeChat answers it.
- ``POST /simulator/login`` ``{"appid", "user"?, "openid"?, "unionid"?, "nickName"?, ...}``
  → ``{"code", "rawData", "signature", "encryptedData", "iv", "openid", "unionid"}``.
  ``"unionid": null`` simulates an app not bound to an open-platform account.
- ``POST /simulator/faults`` ``{"errcode": -1, "times": 3}`` makes the next calls answer that
  errcode (``-1`` busy, ``45011`` rate limited, any other); ``{"raw": "<html>…",
  "status": 502, "times": 1}`` answers a raw non-JSON body. ``DELETE`` clears the faults.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.wechat.simulator.state import (
    CODE_TTL_SECONDS,
    PROFILE_DEFAULTS,
    Answer,
    WeChatSimulator,
)

Endpoint = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    pass


def create_simulator_app(
    apps: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
    code_ttl: float = CODE_TTL_SECONDS,
) -> Starlette:
    """A Starlette app simulating WeChat for ``apps`` (appid → secret).

    The ``WeChatSimulator`` behind it is ``app.state.simulator``, for tests that would rather
    call it directly than over HTTP.
    """
    simulator = WeChatSimulator(apps, clock=clock, code_ttl=code_ttl)

    async def jscode2session(request: Request) -> Response:
        return _plain(simulator.jscode2session(request.query_params))

    async def login(request: Request) -> Response:
        body = await _json_object(request)
        appid = _optional_str(body, "appid")
        if appid is None or appid not in simulator.apps:
            raise _BadRequest("appid must be one of the simulated apps")
        user = _optional_str(body, "user")
        openid = _optional_str(body, "openid")
        if not user and not openid:
            raise _BadRequest("give a user name (user) or an openid")
        with_unionid = body.get("unionid", "") is not None
        profile = {key: _profile_value(body, key) for key in PROFILE_DEFAULTS if key in body}
        minted = simulator.mint_login(
            appid,
            user=user,
            openid=openid,
            unionid=_optional_str(body, "unionid"),
            with_unionid=with_unionid,
            profile=profile,
        )
        return JSONResponse(minted.to_json())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            simulator.clear_faults()
            return Response(status_code=204)
        body = await _json_object(request)
        times = body.get("times", 1)
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise _BadRequest("times must be a positive integer")
        errcode = body.get("errcode")
        raw = body.get("raw")
        if isinstance(errcode, int) and not isinstance(errcode, bool) and raw is None:
            simulator.inject_errcode(errcode, times=times)
        elif isinstance(raw, str) and errcode is None:
            status = body.get("status", 200)
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise _BadRequest("status must be an HTTP status code")
            simulator.inject_fault(Answer(raw, status), times=times)
        else:
            raise _BadRequest("give either an integer errcode or a raw body")
        return JSONResponse({"queued": times}, status_code=201)

    app = Starlette(
        routes=[
            Route("/sns/jscode2session", jscode2session, methods=["GET"]),
            Route("/simulator/login", _answering_bad_requests(login), methods=["POST"]),
            Route("/simulator/faults", _answering_bad_requests(faults), methods=["POST", "DELETE"]),
        ]
    )
    app.state.simulator = simulator
    return app


def _plain(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type="text/plain")


def _answering_bad_requests(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return wrapped


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"{key} must be a string")
    return value


def _profile_value(body: Mapping[str, Any], key: str) -> str | int:
    value = body[key]
    if isinstance(PROFILE_DEFAULTS[key], int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _BadRequest(f"{key} must be an integer")
    if isinstance(value, str):
        return value
    raise _BadRequest(f"{key} must be a string")

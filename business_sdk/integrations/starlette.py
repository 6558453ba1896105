"""Starlette and FastAPI: a webhook endpoint, a route, a FastAPI-style dependency, and
endpoints protected by a WeChat session.

Starlette::

    app = Starlette(routes=[webhook_route(hooks, "/webhooks")])

FastAPI (the endpoint takes a ``Request`` and returns a ``Response``, so FastAPI passes both
through untouched)::

    app.add_api_route("/webhooks", webhook_endpoint(hooks), methods=["POST"])

or, to handle the verified events in your own route::

    @app.post("/webhooks")
    async def receive(batch: WebhookBatch = Depends(verified_batch(hooks))) -> dict: ...

An endpoint only a logged-in WeChat user may call (the mini-program sends its ``X-WX-Skey``),
FastAPI::

    current_session = require_session(broker)

    @app.get("/me")
    async def me(session: Session = Depends(current_session)) -> dict: ...

Starlette::

    @with_session(broker)
    async def me(request: Request, session: Session) -> Response: ...

This module imports only Starlette (FastAPI is built on it and handles its ``HTTPException``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from business_sdk._async_client import TunnelBroker
from business_sdk._exceptions import WebhookError
from business_sdk._handler import WebhookBatch, WebhookHandler
from business_sdk._models import Session

SKEY_HEADER = "X-WX-Skey"


def webhook_endpoint(hooks: WebhookHandler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that verifies, dispatches to ``hooks`` and answers with the actions."""

    async def endpoint(request: Request) -> Response:
        result = await hooks.handle(request.headers, await request.body())
        return Response(result.body, status_code=result.status, media_type=result.media_type)

    return endpoint


def webhook_route(hooks: WebhookHandler, path: str = "/webhooks") -> Route:
    """``Route(path, webhook_endpoint(hooks), methods=["POST"])``."""
    return Route(path, webhook_endpoint(hooks), methods=["POST"])


def verified_batch(hooks: WebhookHandler) -> Callable[[Request], Awaitable[WebhookBatch]]:
    """A dependency that returns the verified ``WebhookBatch`` or answers 401/400 itself;
    the handlers registered on ``hooks`` are not run (use ``hooks.dispatch`` for that)."""

    async def dependency(request: Request) -> WebhookBatch:
        try:
            return hooks.verify(request.headers, await request.body())
        except WebhookError as error:
            raise HTTPException(status_code=error.status, detail=str(error)) from error

    return dependency


# --------------------------------------------------------------------------- WeChat sessions


async def _resolve(broker: TunnelBroker, request: Request, header: str) -> Session | str:
    """The request's session, or why there is none (the 401's detail)."""
    skey = request.headers.get(header, "")
    if not skey:
        return f"send the session as {header} (log in with wx.login first)"
    session = await broker.resolve_session(skey)
    if session is None:
        return "the session is unknown, expired or revoked: log in again (wx.login)"
    return session


def require_session(
    broker: TunnelBroker, *, header: str = SKEY_HEADER
) -> Callable[[Request], Awaitable[Session]]:
    """A FastAPI dependency: the ``Session`` of the request's ``X-WX-Skey``, resolved with
    ``broker``, or a ``401`` (``HTTPException``) when the header is missing or names no live
    session. Create it once and reuse it, so FastAPI resolves the skey once per request even
    when several dependencies need it. Broker errors (unreachable, 5xx) propagate as the SDK's
    exceptions."""

    async def dependency(request: Request) -> Session:
        found = await _resolve(broker, request, header)
        if isinstance(found, str):
            raise HTTPException(status_code=401, detail=found)
        return found

    return dependency


SessionEndpoint = Callable[[Request, Session], Awaitable[Response]]


def with_session(
    broker: TunnelBroker, *, header: str = SKEY_HEADER
) -> Callable[[SessionEndpoint], Callable[[Request], Awaitable[Response]]]:
    """Decorate a Starlette endpoint ``async def endpoint(request, session)`` so it runs only
    for a live session: otherwise the answer is a ``401`` problem-details response with
    ``code`` ``session_not_found`` (the broker's own code), and the endpoint is not called."""

    def decorate(endpoint: SessionEndpoint) -> Callable[[Request], Awaitable[Response]]:
        async def protected(request: Request) -> Response:
            found = await _resolve(broker, request, header)
            if isinstance(found, str):
                return _unauthorized(found)
            return await endpoint(request, found)

        protected.__name__ = getattr(endpoint, "__name__", "protected")
        protected.__doc__ = endpoint.__doc__
        return protected

    return decorate


def _unauthorized(detail: str) -> Response:
    body = {
        "type": "about:blank",
        "title": "Session unknown, expired or revoked",
        "status": 401,
        "detail": detail,
        "code": "session_not_found",
    }
    return JSONResponse(body, status_code=401, media_type="application/problem+json")

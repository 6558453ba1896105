"""Starlette and FastAPI: a webhook endpoint, a route, and a FastAPI-style dependency.

Starlette::

    app = Starlette(routes=[webhook_route(hooks, "/webhooks")])

FastAPI (the endpoint takes a ``Request`` and returns a ``Response``, so FastAPI passes both
through untouched)::

    app.add_api_route("/webhooks", webhook_endpoint(hooks), methods=["POST"])

or, to handle the verified events in your own route::

    @app.post("/webhooks")
    async def receive(batch: WebhookBatch = Depends(verified_batch(hooks))) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from business_sdk._exceptions import WebhookError
from business_sdk._handler import WebhookBatch, WebhookHandler


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

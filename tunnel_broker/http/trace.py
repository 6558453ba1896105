"""``GET /v1/trace``: the app's live trace as server-sent events, for its own API key.

Read with ``fetch`` and a stream reader (``EventSource`` cannot send the Authorization
header, and the key must not travel in the URL). A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing a quiet trace; the trace ends when the
client goes away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.errors import ApiError
from tunnel_broker.http.quota_warning import app_endpoint
from tunnel_broker.node import Node
from tunnel_broker.shapes import check_id
from tunnel_broker.trace.tracer import Watcher

KEEPALIVE_SECONDS = 15.0


def _filter(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return check_id(value)
    except ValueError as exc:
        raise ApiError.invalid(name, str(exc), f"{name} is not a valid id") from None


async def trace(request: Request, node: Node, app: App) -> Response:
    watcher = Watcher(app.id, _filter(request, "tunnel_id"), _filter(request, "user_id"))
    await node.tracer.watch(watcher)

    async def records() -> AsyncIterator[bytes]:
        try:
            yield f": live trace of app {app.id}\n\n".encode()
            while True:
                record = await watcher.next(KEEPALIVE_SECONDS)
                if record is None:
                    yield b": keepalive\n\n"
                else:
                    yield b"data: " + json.dumps(record, ensure_ascii=False).encode() + b"\n\n"
        finally:
            await node.tracer.unwatch(watcher)

    return StreamingResponse(
        records(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


routes = [Route("/v1/trace", app_endpoint(trace), methods=["GET"])]

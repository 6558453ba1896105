"""The ``tb-quota-warning`` header: on every answer of the app's API (errors included)
once the app's use of a quota reached its ``quota_warning_ratio`` (docs/api.md,
"Quotas"), so that a business server notices before anything is refused."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from tunnel_broker.apps import App
from tunnel_broker.backend.quotas import WARNING_HEADER
from tunnel_broker.errors import BrokerError
from tunnel_broker.http.requests import Endpoint, Handler, authenticated
from tunnel_broker.node import Node


class _Headers(Protocol):
    def __setitem__(self, key: str, value: str) -> None: ...


def warned(handler: Handler) -> Handler:
    """``handler``, its answers carrying the warning when one is due. Computed after the
    handler ran, so that what it counted (the messages it sent) is in."""

    async def endpoint(request: Request, node: Node, app: App) -> Response:
        limits = app.limits
        if limits.message_quota is None and limits.max_tunnels is None:
            return await handler(request, node, app)
        try:
            response = await handler(request, node, app)
        except BrokerError as exc:
            await _warn(node, app, exc.headers)
            raise
        await _warn(node, app, response.headers)
        return response

    endpoint.__name__ = handler.__name__
    return endpoint


async def _warn(node: Node, app: App, headers: _Headers) -> None:
    warning = await node.backend.quotas.warning(app)
    if warning is not None:
        headers[WARNING_HEADER] = warning


def app_endpoint(handler: Handler) -> Endpoint:
    """An endpoint of an app's own API: its key checked, its answer warned of quotas."""
    return authenticated(warned(handler))

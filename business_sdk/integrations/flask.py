"""Flask: a view function for webhook deliveries.

::

    app.add_url_rule("/webhooks", view_func=webhook_view(hooks), methods=["POST"])

The view is synchronous; async handlers registered on ``hooks`` still work (each request runs
them on a private event loop).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, request

from business_sdk._handler import WebhookHandler


def webhook_view(
    hooks: WebhookHandler, *, endpoint: str = "tunnel_broker_webhook"
) -> Callable[[], Response]:
    """A view that verifies, dispatches to ``hooks`` and answers with the actions;
    ``endpoint`` is its Flask endpoint name (change it to mount several)."""

    def view() -> Response:
        body = request.get_data(cache=False)
        result = hooks.handle_sync(request.headers, body)
        return Response(result.body, status=result.status, mimetype=result.media_type)

    view.__name__ = endpoint
    return view

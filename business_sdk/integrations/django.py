"""Django: a view for webhook deliveries, exempt from CSRF (the signature is the protection).

::

    urlpatterns = [path("webhooks", webhook_view(hooks))]

The view is synchronous and works under WSGI and ASGI; async handlers registered on ``hooks``
run on a private event loop for each request.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from business_sdk._handler import WebhookHandler


def webhook_view(hooks: WebhookHandler) -> Callable[[HttpRequest], HttpResponse]:
    """A view that verifies, dispatches to ``hooks`` and answers with the actions."""

    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> HttpResponse:
        result = hooks.handle_sync(request.headers, request.body)
        return HttpResponse(result.body, status=result.status, content_type=result.media_type)

    return view

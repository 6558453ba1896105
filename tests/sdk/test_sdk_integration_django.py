"""The Django integration, exercised through Django's test client and middleware (CSRF on)."""

from __future__ import annotations

from typing import Any

import django
import pytest
from django.conf import settings
from django.test import Client
from django.urls import path

from business_sdk import Actions, TunnelConnected, TunnelMessage, WebhookHandler
from business_sdk.integrations.django import webhook_view

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, fixed: urlconf is global

hooks = WebhookHandler(SECRET)


@hooks.on_connected
def admit(event: TunnelConnected, actions: Actions) -> None:
    actions.join(f"room-{event.meta['room']}")


@hooks.on_message
async def reply(event: TunnelMessage, actions: Actions) -> None:
    actions.reply(f"got {len(event.data)} bytes")


urlpatterns = [path("webhooks/tunnel", webhook_view(hooks))]


@pytest.fixture(scope="module")
def client() -> Client:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-secret",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=[
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
            ],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    return Client(enforce_csrf_checks=True)


def test_django_view_verifies_dispatches_and_answers(
    client: Client, sign: Any, make_event: Any, batch_body: Any
) -> None:
    events = [make_event("tunnel.connected", tunnel_id="t1"), make_event(data="héllo")]
    body = batch_body(*events)
    response = client.post(
        "/webhooks/tunnel",
        data=body,
        content_type="application/json",
        headers=sign(body, SECRET),
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["actions"] == [
        {"type": "join", "tunnel_id": "t1", "group": "room-lobby", "event_id": events[0]["id"]},
        {
            "type": "send",
            "to": {"tunnels": ["tun_a"]},
            "data": "got 6 bytes",
            "event_id": events[1]["id"],
        },
    ]


def test_django_view_refuses_forged_requests_and_other_methods(
    client: Client, sign: Any, make_event: Any, batch_body: Any, make_secret: Any
) -> None:
    body = batch_body(make_event())
    forged = client.post(
        "/webhooks/tunnel",
        data=body,
        content_type="application/json",
        headers=sign(body, make_secret()),
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_signature"
    assert client.get("/webhooks/tunnel").status_code == 405

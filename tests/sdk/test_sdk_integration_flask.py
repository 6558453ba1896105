"""The Flask integration, exercised through Flask's own request handling."""

from __future__ import annotations

import asyncio
from typing import Any

from flask import Flask

from business_sdk import Actions, TunnelClosed, TunnelMessage, WebhookHandler
from business_sdk.integrations.flask import webhook_view


def make_app(secret: str, closed: list[str]) -> Flask:
    hooks = WebhookHandler([secret])

    @hooks.on_message
    def shout(event: TunnelMessage, actions: Actions) -> None:
        actions.reply((event.text or "").upper())

    @hooks.on_closed
    async def forget(event: TunnelClosed, actions: Actions) -> None:
        await asyncio.sleep(0)  # async handlers work in a sync framework too
        closed.append(event.tunnel_id)

    app = Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(hooks), methods=["POST"])
    return app


def test_flask_view_verifies_dispatches_and_answers(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    closed: list[str] = []
    client = make_app(secret, closed).test_client()
    body = batch_body(make_event(data="hi"), make_event("tunnel.closed", tunnel_id="t7"))
    response = client.post("/webhooks", data=body, headers=sign(body, secret))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert [a["data"] for a in response.get_json()["actions"]] == ["HI"]
    assert closed == ["t7"]


def test_flask_view_refuses_unsigned_and_stale_requests(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    closed: list[str] = []
    client = make_app(secret, closed).test_client()
    body = batch_body(make_event("tunnel.closed"))
    unsigned = client.post("/webhooks", data=body, content_type="application/json")
    stale = client.post("/webhooks", data=body, headers=sign(body, secret, timestamp=1_000_000))
    assert unsigned.status_code == 401
    assert stale.status_code == 401
    assert stale.get_json()["code"] == "invalid_signature"
    assert client.get("/webhooks").status_code == 405
    assert closed == []


def test_two_handlers_can_be_mounted_under_different_endpoint_names(secret: str) -> None:
    app = Flask(__name__)
    hooks = WebhookHandler(secret)
    app.add_url_rule("/a", view_func=webhook_view(hooks, endpoint="a"), methods=["POST"])
    app.add_url_rule("/b", view_func=webhook_view(hooks, endpoint="b"), methods=["POST"])
    assert {"a", "b"} <= set(app.view_functions)

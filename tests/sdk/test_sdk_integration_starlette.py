"""The Starlette/FastAPI integration, exercised through the real frameworks.

No ``from __future__ import annotations`` here: FastAPI reads the route's ``Annotated``
dependency at runtime, and it refers to a local ``hooks``.
"""

import json
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from starlette.applications import Starlette

from business_sdk import Actions, TunnelConnected, TunnelMessage, WebhookBatch, WebhookHandler
from business_sdk.integrations.starlette import verified_batch, webhook_endpoint, webhook_route


def make_hooks(secret: str) -> WebhookHandler:
    hooks = WebhookHandler(secrets=[secret])

    @hooks.on_connected
    async def gate(event: TunnelConnected, actions: Actions) -> None:
        if event.identity.get("banned"):
            actions.reject("banned")

    @hooks.on_message
    async def echo(event: TunnelMessage, actions: Actions) -> None:
        actions.reply(f"{event.user_id} said {event.text}")

    return hooks


async def test_starlette_route_over_a_real_uvicorn_server(
    secret: str, sign: Any, make_event: Any, batch_body: Any, serve_asgi: Any
) -> None:
    app = Starlette(routes=[webhook_route(make_hooks(secret), "/hooks/tunnel")])
    events = [
        make_event("tunnel.connected", identity={"banned": True}, tunnel_id="t1"),
        make_event("tunnel.message", tunnel_id="t2", data="hi"),
    ]
    body = batch_body(*events)
    async with serve_asgi(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        ok = await client.post("/hooks/tunnel", content=body, headers=sign(body, secret))
        forged = await client.post(
            "/hooks/tunnel", content=body, headers={**sign(body, secret), "webhook-id": "x"}
        )
        wrong_method = await client.get("/hooks/tunnel")
    assert ok.status_code == 200
    assert ok.json() == {
        "actions": [
            {
                "type": "close",
                "tunnel_id": "t1",
                "code": 4403,
                "reason": "banned",
                "event_id": events[0]["id"],
            },
            {
                "type": "send",
                "to": {"tunnels": ["t2"]},
                "data": "user-1 said hi",
                "event_id": events[1]["id"],
            },
        ]
    }
    assert forged.status_code == 401
    assert forged.headers["content-type"] == "application/problem+json"
    assert wrong_method.status_code == 405


async def test_fastapi_endpoint_passes_request_and_response_through(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_endpoint(make_hooks(secret)), methods=["POST"])
    body = batch_body(make_event(data="yo"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        ok = await client.post("/webhooks", content=body, headers=sign(body, secret))
        refused = await client.post("/webhooks", content=body)
    assert ok.status_code == 200
    assert ok.json()["actions"][0]["data"] == "user-1 said yo"
    assert refused.status_code == 401
    assert json.loads(refused.content)["detail"] == "missing webhook-id header"


async def test_fastapi_dependency_hands_verified_events_to_the_route(
    secret: str, make_secret: Any, sign: Any, make_event: Any, batch_body: Any
) -> None:
    app = FastAPI()
    hooks = WebhookHandler(secret)
    hooks.on_message(lambda event, actions: actions.reply("seen"))

    @app.post("/webhooks")
    async def receive(
        batch: Annotated[WebhookBatch, Depends(verified_batch(hooks))],
    ) -> dict[str, Any]:
        actions = await hooks.dispatch(batch.events)
        return {
            "id": batch.webhook_id,
            "users": [e.user_id for e in batch.events],
            "actions": actions,
        }

    body = batch_body(make_event(), make_event(user_id="user-2"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        ok = await client.post("/webhooks", content=body, headers=sign(body, secret, msg_id="m1"))
        refused = await client.post("/webhooks", content=body, headers=sign(body, make_secret()))
        garbage = await client.post("/webhooks", content=b"{}", headers=sign(b"{}", secret))
    assert ok.json()["id"] == "m1"
    assert ok.json()["users"] == ["user-1", "user-2"]
    assert [a["data"] for a in ok.json()["actions"]] == ["seen", "seen"]
    assert refused.status_code == 401
    assert garbage.status_code == 400

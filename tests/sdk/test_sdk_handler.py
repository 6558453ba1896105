"""``WebhookHandler``: refused requests run nothing; accepted ones run the registered handlers
in delivery order and answer with their actions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from business_sdk import (
    Actions,
    Target,
    TunnelClosed,
    TunnelConnected,
    TunnelEvent,
    TunnelMessage,
    WebhookHandler,
)


def answer(response: Any) -> Any:
    assert response.status == 200
    assert response.media_type == "application/json"
    return json.loads(response.body)["actions"]


async def test_reply_sends_to_the_event_tunnel(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secrets=[secret])

    @hooks.on_message
    async def echo(event: TunnelMessage, actions: Actions) -> None:
        actions.reply(f"{event.identity['nick']}: {event.text}")

    event = make_event(tunnel_id="tun_x", data="hi")
    body = batch_body(event)
    actions = answer(await hooks.handle(sign(body, secret), body))
    assert actions == [
        {
            "type": "send",
            "to": {"tunnels": ["tun_x"]},
            "data": "小明: hi",
            "event_id": event["id"],
        }
    ]


async def test_handlers_run_per_type_in_delivery_order_and_actions_keep_that_order(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)
    seen: list[str] = []

    @hooks.on_event
    def log(event: TunnelEvent, actions: Actions) -> None:
        seen.append(f"any:{event.type}")

    @hooks.on_connected
    def welcome(event: TunnelConnected, actions: Actions) -> None:
        seen.append("connected")
        actions.join("lobby")
        actions.reply(b"\x01")

    @hooks.on_message
    async def relay(event: TunnelMessage, actions: Actions) -> None:
        await asyncio.sleep(0)
        seen.append("message")
        actions.send(Target.groups("lobby"), event.data)

    @hooks.on_closed
    def bye(event: TunnelClosed, actions: Actions) -> None:
        seen.append(f"closed:{event.code}")
        actions.send(Target.users(event.user_id), "your other device left")

    events = [
        make_event("tunnel.connected", tunnel_id="t1"),
        make_event("tunnel.message", tunnel_id="t1", data="yo"),
        make_event("tunnel.closed", tunnel_id="t2", code=1001),
    ]
    body = batch_body(*events)
    actions = answer(await hooks.handle(sign(body, secret), body))
    assert seen == [
        "any:tunnel.connected",
        "connected",
        "any:tunnel.message",
        "message",
        "any:tunnel.closed",
        "closed:1001",
    ]
    assert [(a["type"], a.get("event_id")) for a in actions] == [
        ("join", events[0]["id"]),
        ("send", events[0]["id"]),
        ("send", events[1]["id"]),
        ("send", events[2]["id"]),
    ]
    assert actions[0] == {
        "type": "join",
        "tunnel_id": "t1",
        "group": "lobby",
        "event_id": events[0]["id"],
    }
    assert actions[1]["data_base64"] == "AQ=="
    assert actions[2]["to"] == {"groups": ["lobby"]}
    assert actions[2]["data_base64"] == "eW8="  # event.data is bytes: a binary frame
    assert actions[3]["to"] == {"users": ["user-1"]}


async def test_reject_closes_the_connecting_tunnel_with_4403(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)

    @hooks.on_connected
    def gate(event: TunnelConnected, actions: Actions) -> None:
        if not event.identity.get("vip"):
            actions.reject("members only")

    event = make_event("tunnel.connected", tunnel_id="t9")
    body = batch_body(event)
    assert answer(await hooks.handle(sign(body, secret), body)) == [
        {
            "type": "close",
            "tunnel_id": "t9",
            "code": 4403,
            "reason": "members only",
            "event_id": event["id"],
        }
    ]


def test_close_join_and_leave_default_to_the_event_tunnel_but_accept_others(
    make_event: Any,
) -> None:
    from business_sdk._events import parse_event

    actions = Actions(parse_event(make_event("tunnel.message", tunnel_id="t1")))
    actions.close()
    actions.close("t2", code=4001, reason="kicked")
    actions.leave("lobby")
    actions.join("vip", "t3")
    assert [(a["type"], a["tunnel_id"]) for a in actions.to_list()] == [
        ("close", "t1"),
        ("close", "t2"),
        ("leave", "t1"),
        ("join", "t3"),
    ]
    assert actions.to_list()[0] == {
        "type": "close",
        "tunnel_id": "t1",
        "event_id": "evt_" + actions.event.id[4:],
    }
    with pytest.raises(ValueError, match="4000-4999"):
        actions.close(code=1011)
    with pytest.raises(TypeError, match="Target"):
        actions.send("t1", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        actions.join("")


async def test_a_batch_without_actions_is_acknowledged_with_an_empty_list(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)
    body = batch_body(make_event("tunnel.connected"), make_event("tunnel.other", data=...))
    assert answer(await hooks.handle(sign(body, secret), body)) == []


async def test_a_bad_signature_is_answered_401_without_running_handlers(
    secret: str, make_secret: Any, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)
    ran: list[TunnelEvent] = []
    hooks.on_event(lambda event, actions: ran.append(event))
    body = batch_body(make_event())
    response = await hooks.handle(sign(body, make_secret()), body)
    assert response.status == 401
    assert response.media_type == "application/problem+json"
    assert json.loads(response.body)["code"] == "invalid_signature"
    assert ran == []


async def test_a_signed_body_that_is_not_a_batch_is_answered_400(secret: str, sign: Any) -> None:
    hooks = WebhookHandler(secret)
    body = b'{"hello": "world"}'
    response = await hooks.handle(sign(body, secret), body)
    assert response.status == 400
    assert json.loads(response.body)["code"] == "invalid_payload"


async def test_a_failing_handler_fails_the_request_so_the_batch_is_redelivered(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)

    @hooks.on_message
    async def broken(event: TunnelMessage, actions: Actions) -> None:
        raise LookupError("database down")

    body = batch_body(make_event())
    with pytest.raises(LookupError):
        await hooks.handle(sign(body, secret), body)


def test_a_failing_handler_fails_a_sync_request_too(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)

    @hooks.on_message
    async def broken(event: TunnelMessage, actions: Actions) -> None:
        raise LookupError("database down")

    body = batch_body(make_event())
    with pytest.raises(LookupError):
        hooks.handle_sync(sign(body, secret), body)


def test_handle_sync_runs_sync_and_async_handlers(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)

    @hooks.on_message
    def first(event: TunnelMessage, actions: Actions) -> None:
        actions.reply("sync")

    @hooks.on_message
    async def second(event: TunnelMessage, actions: Actions) -> None:
        await asyncio.sleep(0)
        actions.reply("async")

    body = batch_body(make_event(), make_event())
    actions = answer(hooks.handle_sync(sign(body, secret), body))
    assert [a["data"] for a in actions] == ["sync", "async", "sync", "async"]


async def test_handle_sync_inside_an_event_loop_explains_itself(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)

    @hooks.on_message
    async def handler(event: TunnelMessage, actions: Actions) -> None:
        return None

    body = batch_body(make_event())
    with pytest.raises(RuntimeError, match=r"await hooks\.handle"):
        hooks.handle_sync(sign(body, secret), body)


def test_decorators_return_the_function_unchanged(secret: str) -> None:
    hooks = WebhookHandler(secret)

    def handler(event: TunnelMessage, actions: Actions) -> None:
        return None

    assert hooks.on_message(handler) is handler


def test_verify_returns_the_webhook_id_and_events(
    secret: str, sign: Any, make_event: Any, batch_body: Any
) -> None:
    hooks = WebhookHandler(secret)
    body = batch_body(make_event(), make_event("tunnel.closed"))
    batch = hooks.verify(sign(body, secret, msg_id="msg_42"), body)
    assert batch.webhook_id == "msg_42"
    assert [type(e) for e in batch.events] == [TunnelMessage, TunnelClosed]
    assert "hidden" in repr(hooks)

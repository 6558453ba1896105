"""The SDK against a real broker process, a real WebSocket client and a webhook receiver built
from the SDK's own Starlette integration.

Every SDK call is exercised end to end. The broker runs as ``python -m tunnel_broker serve``
with an apps file whose webhook secrets are mid-rotation (new and old), while the receiver
holds only the new one, so signature rotation is checked against the real signer too.
Waits are on events (queues fed by the webhook handlers), never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from business_sdk import (
    Actions,
    AuthenticationError,
    Message,
    SyncTunnelBroker,
    Target,
    TunnelBroker,
    TunnelClosed,
    TunnelConnected,
    TunnelMessage,
    TunnelNotConnectedError,
    ValidationFailedError,
    WebhookHandler,
)
from business_sdk.integrations.starlette import webhook_route
from tests.support.servers import free_port
from tests.support.waiting import check_for, scaled

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
API_KEY = "tbk_sdk_" + secrets.token_hex(12)
WAIT = 10.0


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Receiver:
    """What the webhook handlers saw, as queues to await."""

    connected: asyncio.Queue[TunnelConnected] = field(default_factory=asyncio.Queue)
    messages: asyncio.Queue[TunnelMessage] = field(default_factory=asyncio.Queue)
    closed: asyncio.Queue[TunnelClosed] = field(default_factory=asyncio.Queue)

    async def next(self, queue: asyncio.Queue[Any]) -> Any:
        return await asyncio.wait_for(queue.get(), scaled(WAIT))

    async def closed_of(self, tunnel_id: str) -> TunnelClosed:
        """The closed event of this tunnel, skipping other tunnels' events."""
        while True:
            event: TunnelClosed = await self.next(self.closed)
            if event.tunnel_id == tunnel_id:
                return event

    async def connected_of(self, tunnel_id: str) -> TunnelConnected:
        """The connected event of this tunnel, skipping other tunnels' events."""
        while True:
            event: TunnelConnected = await self.next(self.connected)
            if event.tunnel_id == tunnel_id:
                return event


def make_hooks(secret: str, seen: Receiver) -> WebhookHandler:
    """A business server: gate on identity, and a tiny command language over messages."""
    hooks = WebhookHandler(secrets=[secret])

    @hooks.on_connected
    async def gate(event: TunnelConnected, actions: Actions) -> None:
        if event.identity.get("banned"):
            actions.reject("banned")
        seen.connected.put_nowait(event)

    @hooks.on_message
    async def commands(event: TunnelMessage, actions: Actions) -> None:
        text = event.text or ""
        verb, _, arg = text.partition(":")
        if verb == "echo":
            actions.reply(arg)
        elif verb == "join":
            actions.join(arg)
            actions.reply(f"joined {arg}")
        elif verb == "leave":
            actions.leave(arg)
            actions.reply(f"left {arg}")
        elif verb == "tell-group":
            actions.send(Target.groups(arg), f"from {event.identity['nick']}")
        elif verb == "bye":
            actions.close(code=4001, reason="bye")
        seen.messages.put_nowait(event)

    @hooks.on_closed
    def closed(event: TunnelClosed, actions: Actions) -> None:
        seen.closed.put_nowait(event)

    return hooks


@contextlib.asynccontextmanager
async def run_receiver(hooks: WebhookHandler, serve_asgi: Any) -> AsyncIterator[str]:
    app = Starlette(routes=[webhook_route(hooks, "/webhooks")])
    async with serve_asgi(app) as base_url:
        yield f"{base_url}/webhooks"


@contextlib.asynccontextmanager
async def run_broker(
    tmp_path: Path,
    webhook_url: str,
    secrets_: list[str],
    *,
    app_fields: Mapping[str, str | bool] | None = None,
) -> AsyncIterator[str]:
    """``python -m tunnel_broker serve`` on a free port; yields its base URL.

    ``app_fields`` are more top-level settings of the app (``wechat_appid = "..."``, ...)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    apps_file = tmp_path / "apps.toml"
    quoted = ", ".join(f'"{s}"' for s in secrets_)
    # A JSON string or boolean is also a TOML one.
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (app_fields or {}).items())
    apps_file.write_text(
        "[[apps]]\n"
        'id = "sdk"\n'
        f'api_keys = ["{API_KEY}"]\n'
        f'webhook_url = "{webhook_url}"\n'
        f"webhook_secrets = [{quoted}]\n"
        f"{extra}"
        "[apps.limits]\n"
        "messages_per_second = 1000\n"
        "message_burst = 1000\n"
    )
    log_path = tmp_path / "broker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunnel_broker",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--public-url",
                url,
                "--apps-file",
                str(apps_file),
                # One argument: a key that starts with "-" must not read as a flag.
                f"--secret-key={secrets.token_urlsafe(32)}",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient() as probe:

            async def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"broker exited:\n{log_path.read_text()}")
                try:
                    return (await probe.get(f"{url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await check_for(20, healthy, interval=0.05, what="broker /healthz")
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    broker_url: str
    sdk: TunnelBroker
    seen: Receiver

    async def open(
        self, user_id: str, **kwargs: Any
    ) -> tuple[str, ClientConnection, TunnelConnected]:
        """Create a tunnel, connect a WebSocket, and wait until the business server saw it."""
        tunnel = await self.sdk.create_tunnel(user_id, **kwargs)
        ws = await connect(tunnel.connect_url, open_timeout=scaled(WAIT))
        return tunnel.tunnel_id, ws, await self.seen.connected_of(tunnel.tunnel_id)


@pytest.fixture
async def stack(tmp_path: Path, serve_asgi: Any) -> AsyncIterator[Stack]:
    old, new = new_secret(), new_secret()
    seen = Receiver()
    async with (
        run_receiver(make_hooks(new, seen), serve_asgi) as webhook_url,
        run_broker(tmp_path, webhook_url, [new, old]) as broker_url,
        TunnelBroker(broker_url, API_KEY) as sdk,
    ):
        yield Stack(broker_url, sdk, seen)


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), scaled(WAIT))


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


# --------------------------------------------------------------------------- tests


async def test_tunnel_round_trip_with_identity_text_binary_and_close(stack: Stack) -> None:
    tunnel = await stack.sdk.create_tunnel(
        "user-1",
        identity={"openid": "o-1", "nick": "小明"},
        meta={"room": "lobby"},
        groups=["lobby"],
        ttl=600,
    )
    assert tunnel.tunnel_id and tunnel.connect_url.startswith("ws://127.0.0.1:")
    assert tunnel.expires_at.tzinfo is not None
    async with connect(tunnel.connect_url) as ws:
        connected = await stack.seen.next(stack.seen.connected)
        assert (connected.tunnel_id, connected.user_id) == (tunnel.tunnel_id, "user-1")
        assert connected.identity == {"openid": "o-1", "nick": "小明"}
        assert connected.meta == {"room": "lobby"}
        assert connected.app_id == "sdk"

        await ws.send("echo:你好")
        assert await recv(ws) == "你好"
        text = await stack.seen.next(stack.seen.messages)
        assert (text.text, text.identity["nick"]) == ("echo:你好", "小明")

        await ws.send(b"\x00\x01\xff")
        binary = await stack.seen.next(stack.seen.messages)
        assert binary.is_binary and binary.data == b"\x00\x01\xff"
        assert binary.user_id == "user-1"
    closed = await stack.seen.closed_of(tunnel.tunnel_id)
    assert closed.code == 1000
    assert closed.identity["openid"] == "o-1"


async def test_send_reaches_tunnels_users_groups_and_everyone(stack: Stack) -> None:
    a1, ws_a1, _ = await stack.open("ann", groups=["lobby"])
    a2, ws_a2, _ = await stack.open("ann")
    b1, ws_b1, _ = await stack.open("bob", groups=["lobby"])

    result = await stack.sdk.send(Target.tunnels(a1, "tun_gone"), "to a1")
    assert result.accepted == 1
    assert result.not_connected == ["tun_gone"]
    assert await recv(ws_a1) == "to a1"

    await stack.sdk.send(Target.users("ann"), b"\x01binary")
    assert await recv(ws_a1) == b"\x01binary"
    assert await recv(ws_a2) == b"\x01binary"

    await stack.sdk.send(Target.groups("lobby"), "lobby news")
    assert {await recv(ws_a1), await recv(ws_b1)} == {"lobby news"}

    batch = await stack.sdk.send_many(
        [Message(Target.all(), "everyone"), Message(Target.tunnels(b1), "just bob")]
    )
    assert batch.accepted == 2
    for ws in (ws_a1, ws_a2, ws_b1):
        assert await recv(ws) == "everyone"
    assert await recv(ws_b1) == "just bob"
    # a2 got nothing else: the next thing it sees is a message sent after all of the above.
    await stack.sdk.send(Target.tunnels(a2), "last")
    assert await recv(ws_a2) == "last"
    for ws in (ws_a1, ws_a2, ws_b1):
        await ws.close()


async def test_presence_lists_tunnels_across_pages(stack: Stack) -> None:
    ids = []
    sockets = []
    for _ in range(3):
        tunnel_id, ws, _ = await stack.open("carol", identity={"nick": "C"}, groups=["g1"])
        ids.append(tunnel_id)
        sockets.append(ws)

    info = await stack.sdk.get_tunnel(ids[0])
    assert info is not None
    assert (info.tunnel_id, info.user_id, info.identity) == (ids[0], "carol", {"nick": "C"})
    assert list(info.groups) == ["g1"]
    assert info.connected_at.tzinfo is not None and info.node_id

    listed = [t.tunnel_id async for t in stack.sdk.user_tunnels("carol", page_size=2)]
    assert sorted(listed) == sorted(ids)
    in_group = [t.tunnel_id async for t in stack.sdk.group_tunnels("g1", page_size=1)]
    assert sorted(in_group) == sorted(ids)
    page = await stack.sdk.user_tunnels_page("carol", limit=2)
    assert len(page.tunnels) == 2 and page.next_cursor
    rest = await stack.sdk.user_tunnels_page("carol", limit=2, cursor=page.next_cursor)
    assert len(rest.tunnels) == 1 and rest.next_cursor is None
    group_page = await stack.sdk.group_tunnels_page("g1", limit=5)
    assert len(group_page.tunnels) == 3

    assert await stack.sdk.get_tunnel("tun_never_existed") is None
    assert [t async for t in stack.sdk.user_tunnels("nobody")] == []
    for ws in sockets:
        await ws.close()


async def test_join_and_leave_change_group_delivery_and_presence(stack: Stack) -> None:
    tunnel_id, ws, _ = await stack.open("dave")
    await stack.sdk.join("vip", tunnel_id)
    info = await stack.sdk.get_tunnel(tunnel_id)
    assert info is not None and "vip" in info.groups
    await stack.sdk.send(Target.groups("vip"), "vip only")
    assert await recv(ws) == "vip only"

    await stack.sdk.leave("vip", tunnel_id)
    assert [t async for t in stack.sdk.group_tunnels("vip")] == []
    result = await stack.sdk.send(Target.groups("vip"), "nobody hears")
    assert result.accepted == 1

    with pytest.raises(TunnelNotConnectedError) as caught:
        await stack.sdk.join("vip", "tun_gone")
    assert (caught.value.status, caught.value.code) == (404, "tunnel_not_connected")
    with pytest.raises(TunnelNotConnectedError):
        await stack.sdk.leave("vip", "tun_gone")
    await ws.close()


async def test_close_tunnel_and_close_user_reach_the_client_and_the_webhook(
    stack: Stack,
) -> None:
    one, ws_one, _ = await stack.open("erin")
    two, ws_two, _ = await stack.open("erin")
    three, ws_three, _ = await stack.open("erin")

    assert await stack.sdk.close_tunnel(one, code=4001, reason="kicked") is True
    assert await closed_with(ws_one) == (4001, "kicked")
    event = await stack.seen.closed_of(one)
    assert (event.code, event.reason) == (4001, "kicked")
    assert await stack.sdk.close_tunnel(one) is False

    assert await stack.sdk.close_user("erin", code=4002, reason="logout") == 2
    assert await closed_with(ws_two) == (4002, "logout")
    assert await closed_with(ws_three) == (4002, "logout")
    assert await stack.sdk.close_user("erin") == 0
    assert {(await stack.seen.next(stack.seen.closed)).tunnel_id for _ in range(2)} == {two, three}


async def test_webhook_actions_reject_join_leave_send_and_close(stack: Stack) -> None:
    banned = await stack.sdk.create_tunnel("mallory", identity={"banned": True})
    async with connect(banned.connect_url) as ws_banned:
        assert await closed_with(ws_banned) == (4403, "banned")
    assert (await stack.seen.connected_of(banned.tunnel_id)).identity == {"banned": True}
    assert (await stack.seen.closed_of(banned.tunnel_id)).code == 4403

    frank, ws_frank, _ = await stack.open("frank", identity={"nick": "Frank"})
    grace, ws_grace, _ = await stack.open("grace", identity={"nick": "Grace"})
    await ws_grace.send("join:book-club")
    assert await recv(ws_grace) == "joined book-club"
    await ws_frank.send("tell-group:book-club")
    assert await recv(ws_grace) == "from Frank"
    await ws_grace.send("leave:book-club")
    assert await recv(ws_grace) == "left book-club"
    assert [t async for t in stack.sdk.group_tunnels("book-club")] == []

    await ws_frank.send("bye")
    assert await closed_with(ws_frank) == (4001, "bye")
    assert (await stack.seen.closed_of(frank)).reason == "bye"
    await ws_grace.close()
    await stack.seen.closed_of(grace)


async def test_broker_errors_arrive_as_typed_exceptions(stack: Stack) -> None:
    async with TunnelBroker(stack.broker_url, "tbk_wrong_0123456789abcdef") as wrong:
        with pytest.raises(AuthenticationError) as auth:
            await wrong.send(Target.all(), "x")
    assert (auth.value.status, auth.value.code) == (401, "invalid_api_key")

    with pytest.raises(ValidationFailedError) as invalid:
        await stack.sdk.create_tunnel("user-1", ttl=1)
    assert invalid.value.code == "validation_failed"
    assert any("ttl" in e.field for e in invalid.value.errors)


async def test_sync_client_does_the_same_against_the_real_broker(stack: Stack) -> None:
    tunnel_id, ws, _ = await stack.open("heidi", groups=["sync"])

    def business_logic() -> tuple[Any, ...]:
        with SyncTunnelBroker(stack.broker_url, API_KEY) as broker:
            info = broker.get_tunnel(tunnel_id)
            sent = broker.send(Target.tunnels(tunnel_id), "from sync")
            members = [t.tunnel_id for t in broker.group_tunnels("sync")]
            broker.join("sync-2", tunnel_id)
            broker.leave("sync-2", tunnel_id)
            users = [t.tunnel_id for t in broker.user_tunnels("heidi")]
            created = broker.create_tunnel("ivan")
            closed = broker.close_tunnel(tunnel_id, code=4000)
            return info, sent, members, users, created, closed

    info, sent, members, users, created, closed = await asyncio.to_thread(business_logic)
    assert info is not None and info.user_id == "heidi"
    assert sent.accepted == 1 and sent.not_connected == []
    assert members == [tunnel_id] and users == [tunnel_id]
    assert created.connect_url.startswith("ws://")
    assert closed is True
    assert await recv(ws) == "from sync"
    assert (await closed_with(ws))[0] == 4000

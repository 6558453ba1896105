"""A push to a group reaches a reliable tunnel whose socket dropped; Redis numbers it only
after the client's resume registered (the resume counted the pushes to replay without
it). The resumed socket still gets it: found while running the suite under load, where
the numbering round trip came back after the resume's."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for
from tunnel_broker.apps import App, parse_apps
from tunnel_broker.backend.redis.backend import RedisBackend
from tunnel_broker.targets import Target
from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.hub import Hub
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel
from tunnel_broker.webhooks import events


def make_app() -> App:
    (app,) = parse_apps(
        [
            {
                "id": "a",
                "api_keys": ["tbk_a_0123456789abcdef"],
                "webhook_url": "http://127.0.0.1:9/hook",
                "webhook_secrets": ["whsec_" + "a" * 40],
            }
        ]
    )
    return app


class Socket:
    """What the broker wrote to one socket (the server's ``send``, completing at once)."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send":
            self.frames.append(message["text"])


async def opened(backend: RedisBackend, app: App, socket: Socket, **kw: Any) -> ReliableTunnel:
    """A reliable tunnel registered and opened as ``tunnels/connect.py`` does it."""
    fragment = events.tunnel_fragment(app.id, "tun_x", "ann", {}, {})
    tunnel = ReliableTunnel(app, "tun_x", "ann", {}, {}, {"room"}, fragment, socket.send, **kw)
    tunnel.writer.hold()
    await backend.attach(tunnel)
    tunnel.welcome(60)
    tunnel.writer.release()
    return tunnel


async def test_a_push_numbered_after_the_resume_registered_reaches_the_resumed_socket(
    redis_server: RedisServer,
) -> None:
    app = make_app()
    hub = Hub()
    backend = RedisBackend(redis_server.url, hub, "pod-a", lambda *_: 0, lease_seconds=3.0)
    await backend.start()
    try:
        first = await opened(backend, app, Socket())
        first.end()
        first.park()  # the socket dropped: pushes are kept for a resume
        await backend.parked(first)

        # Redis numbers the group push only once the resume has registered.
        registered = asyncio.Event()
        number = backend.resumes.number

        async def number_later(*args: Any, **kwargs: Any) -> Any:
            await registered.wait()
            return await number(*args, **kwargs)

        backend.resumes.number = number_later  # type: ignore[method-assign]
        hub.push(app.id, Target("groups", ("room",)), "late")

        socket = Socket()
        write = backend.registry.write

        async def write_then_release(*args: Any, **kwargs: Any) -> Any:
            try:
                return await write(*args, **kwargs)
            finally:
                registered.set()

        backend.registry.write = write_then_release  # type: ignore[method-assign]
        resumed = await opened(backend, app, socket, resume_after=0)
        assert resumed.resumed
        frame = reliable.data_frame(1, "late")
        await check_for(5, lambda: frame in socket.frames, what="the late push")
        assert socket.frames.count(frame) == 1
    finally:
        await backend.stop()

"""``GET /v1/connect?token=...``: the life of one tunnel, from handshake to close.

A raw ASGI handler rather than a Starlette endpoint, for the handshake and the end; in
between, the socket itself (``protocol.py``) hands the client's messages to the tunnel's
reader (``reader.py``) and takes pushes from its writer (``writer.py``), past ASGI.
The order of events per tunnel is always connected, messages..., closed, and exactly one
``tunnel.closed`` follows each ``tunnel.connected`` whatever ends the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from tunnel_broker.apps import App
from tunnel_broker.errors import (
    BackendUnavailable,
    TokenExpired,
    TokenInvalid,
    TooManyTunnels,
    TunnelQuotaExceeded,
    UnknownApp,
)
from tunnel_broker.node import Node
from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.closecodes import CloseCode, metric_label
from tunnel_broker.tunnels.protocol import SOCKET_EXTENSION
from tunnel_broker.tunnels.reader import TunnelReader
from tunnel_broker.tunnels.reliable_tunnel import ReliableTunnel
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.wafer.events import is_wafer_tunnel
from tunnel_broker.webhooks import events

logger = logging.getLogger("tunnel_broker.tunnels.connect")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# Ends of a reliable tunnel's socket that are no drop: the client closed it on purpose.
_CLIENT_ENDS = frozenset({1000, 1001})


def _query_value(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def _accept(subprotocol: str | None) -> dict[str, Any]:
    if subprotocol is None:
        return {"type": "websocket.accept"}
    return {"type": "websocket.accept", "subprotocol": subprotocol}


async def _refuse(send: Send, code: int, reason: str, subprotocol: str | None = None) -> None:
    """Accept, then close with ``code``: browsers and ``wx.connectSocket`` only show a
    close code for sockets that opened, and the code is the whole point (a browser that
    asked for a subprotocol opens nothing unless one is chosen)."""
    await send(_accept(subprotocol))
    await _close(send, code, reason)


async def _close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.close", "code": code, "reason": reason})


class ConnectHandler:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        socket = scope["extensions"][SOCKET_EXTENSION]
        node = self.node
        metrics = node.metrics
        apps = node.apps
        subprotocol = self._subprotocol(scope)
        try:
            claims = node.tokens.verify(
                _query_value(scope, "token") or "",
                is_known_app=lambda app_id: apps.get(app_id) is not None,
            )
        except TokenExpired:
            metrics.connects.labels("", "token_expired").inc()
            return await _refuse(send, CloseCode.TOKEN_EXPIRED, "token_expired", subprotocol)
        except UnknownApp:
            metrics.connects.labels("", "unknown_app").inc()
            return await _refuse(send, CloseCode.TOKEN_INVALID, "token_invalid", subprotocol)
        except TokenInvalid:
            metrics.connects.labels("", "token_invalid").inc()
            return await _refuse(send, CloseCode.TOKEN_INVALID, "token_invalid", subprotocol)
        app = apps.get(claims.app_id)
        if app is None or not self._speaks_for(app, claims.tunnel_id):
            # Removed since the check above, or a tunnel of the other protocol.
            metrics.connects.labels("", "unknown_app" if app is None else "token_invalid").inc()
            return await _refuse(send, CloseCode.TOKEN_INVALID, "token_invalid", subprotocol)
        try:
            resume_after = reliable.resume_point(_query_value(scope, "resume"))
        except reliable.FrameError:
            metrics.connects.labels(app.id, "invalid_resume").inc()
            return await _refuse(send, CloseCode.PROTOCOL_ERROR, "invalid_resume", subprotocol)
        refusal = await self._refusal(app)
        if refusal is not None:
            metrics.connects.labels(app.id, refusal[1]).inc()
            return await _refuse(send, *refusal, subprotocol)

        fragment = events.tunnel_fragment(
            app.id, claims.tunnel_id, claims.user_id, claims.identity, claims.meta
        )
        tunnel = (ReliableTunnel if subprotocol is not None else Tunnel)(
            app,
            claims.tunnel_id,
            claims.user_id,
            claims.identity,
            claims.meta,
            set(claims.groups),
            fragment,
            send,
            resume_after=resume_after,
        )
        # Registered before the handshake completes: a client can send nothing on a
        # socket that is then refused (its messages would be lost with it). Pushes that
        # reach it meanwhile wait in its writer.
        tunnel.writer.hold()
        try:
            took_over = await node.backend.attach(tunnel)
        except BackendUnavailable:
            metrics.connects.labels(app.id, "backend_unavailable").inc()
            return await _refuse(
                send, CloseCode.TRY_AGAIN_LATER, "backend_unavailable", subprotocol
            )
        except TooManyTunnels:
            metrics.connects.labels(app.id, "too_many_tunnels").inc()
            return await _refuse(send, CloseCode.POLICY_VIOLATION, "too_many_tunnels", subprotocol)
        except TunnelQuotaExceeded:
            metrics.connects.labels(app.id, "tunnel_quota").inc()
            metrics.quota_refusals.labels(app.id, "tunnels").inc()
            return await _refuse(send, CloseCode.QUOTA_EXCEEDED, "tunnel_quota", subprotocol)
        # From now on the socket hands the client's messages to the reader, and pushes
        # are written to it directly (``protocol.py``).
        reader = TunnelReader(
            tunnel,
            socket,
            node.events,
            node.backend.lease,
            node.usage,
            self._inbound,
            node.backend.quotas,
        )
        socket.consumer = reader
        await send(_accept(subprotocol))
        self._opened(tunnel)
        tunnel.writer.release()
        tunnel.writer.direct = socket
        if not took_over:
            node.events.emit(
                app, events.connected(fragment, tunnel.tunnel_id), tunnel.approve, tunnel.epoch
            )
        result = "resumed" if tunnel.resumed else "takeover" if took_over else "accepted"
        metrics.connects.labels(app.id, result).inc()
        code, reason = 1006, ""
        dropped = False
        try:
            code, reason = await self._relay(reader, receive)
            dropped = tunnel.close_code is None and code not in _CLIENT_ENDS
        finally:
            tunnel.end()
            if tunnel.reliable is not None and dropped:
                node.keep_parked(self._park(tunnel, code))
            else:
                await self._finish(tunnel, code, reason)

    async def _finish(self, tunnel: Tunnel, code: int, reason: str) -> None:
        """The tunnel's socket is done: forget it, and report its close (unless a newer
        socket took the tunnel over)."""
        node = self.node
        await node.backend.detach(tunnel)
        if tunnel.replaced:
            return
        if tunnel.close_code is not None:
            code, reason = tunnel.close_code, tunnel.close_reason
        elif not reason:
            reason = "connection_lost" if code in (1005, 1006) else "client_closed"
        app = tunnel.app
        closed = events.closed(tunnel.fragment, tunnel.tunnel_id, code, reason)
        node.events.emit(app, closed, epoch=tunnel.epoch)
        node.metrics.closes.labels(app.id, metric_label(code)).inc()
        if reason == "message_quota" and code == CloseCode.QUOTA_EXCEEDED:
            node.metrics.quota_refusals.labels(app.id, "messages").inc()

    async def _park(self, tunnel: Tunnel, code: int) -> None:
        """Keep a reliable tunnel whose socket dropped for its app's resume window:
        pushes are kept for it, and its client may come back (a takeover that resumes:
        no events). Ends when it resumes, when the window passes (``resume_expired``),
        or when someone closes it meanwhile (the business server, a drain)."""
        tunnel.park()
        window = tunnel.app.limits.resume_window_seconds
        try:
            await self.node.backend.parked(tunnel)
            if window > 0:
                await tunnel.unless_closed(asyncio.sleep(window))
            tunnel.expire(code, "resume_expired")
        finally:
            await self._finish(tunnel, code, "")

    def _subprotocol(self, scope: Scope) -> str | None:
        """The WebSocket subprotocol this socket speaks: the reliable protocol when the
        client asks for it, else none (raw frames)."""
        return (
            reliable.SUBPROTOCOL if reliable.SUBPROTOCOL in scope.get("subprotocols", ()) else None
        )

    def _speaks_for(self, app: App, tunnel_id: str) -> bool:
        """Whether this endpoint's protocol is the tunnel's: Wafer tunnels connect to
        their own (``wafer_connect.py``)."""
        return not is_wafer_tunnel(tunnel_id)

    def _opened(self, tunnel: Tunnel) -> None:
        """The socket is open: what this protocol says first (the reliable protocol's
        welcome, and what the client missed; raw frames: nothing)."""
        tunnel.welcome(tunnel.app.limits.resume_window_seconds)

    def _inbound(self, tunnel: Tunnel, frame: str | bytes) -> str | bytes | None:
        """What a client's frame relays (None: nothing): the frame itself, or the
        reliable protocol's message."""
        if isinstance(tunnel, ReliableTunnel):
            return tunnel.receive_numbered(frame)
        return frame

    async def _refusal(self, app: App) -> tuple[int, str] | None:
        """Why this node cannot take a tunnel of ``app`` now, if it cannot. (The per-user
        limit and the app's tunnel quota are checked later, atomically with the
        registration.)"""
        node = self.node
        if node.draining:
            return CloseCode.SERVICE_RESTART, "broker_restarting"
        if not node.backend.ready():
            return CloseCode.TRY_AGAIN_LATER, "backend_unavailable"
        queue = node.events.queue(app)
        if queue.full:
            try:
                await asyncio.wait_for(queue.wait_for_room(), node.settings.connect_wait_seconds)
            except TimeoutError:
                return CloseCode.TRY_AGAIN_LATER, "overloaded"
        return None

    async def _relay(self, reader: TunnelReader, receive: Receive) -> tuple[int, str]:
        """Relay the client's messages (the socket hands them to the reader) until the
        socket ends and what it read was relayed; return its close code."""
        try:
            while True:
                message = await receive()  # only the disconnect comes this way
                if message["type"] == "websocket.disconnect":
                    break
            await reader.drained()
        finally:
            await reader.stop()
        return int(message.get("code", 1005)), str(message.get("reason") or "")

"""The WebSocket protocol under every tunnel: uvicorn's sans-I/O implementation, with
two rules changed so that back-pressure never costs a client its socket or its messages.

uvicorn stops reading a socket while the application has a message of it unconsumed;
the broker relies on that (it stops consuming while the business server cannot keep up,
and TCP carries the pressure to the client). Everything the client sends, pongs and
close frames included, then waits in the kernel behind its unread messages. Stock
uvicorn does not allow for that:

1. **Deadlines do not run out while the broker chose not to read.** A keepalive pong, or
   the client's answer to a close frame, cannot arrive while its socket is paused; a
   deadline that expires then would drop a healthy client (``1011 keepalive ping
   timeout`` after a long webhook outage) and lose every message still unread. Both
   deadlines are therefore extended while the application holds unconsumed messages and
   is still running, and apply in full once reading resumes.
2. **Messages sent before the client saw our close frame still count.** Stock uvicorn
   reports the disconnect as soon as the application sends a close frame and discards
   whatever arrives after it. A tunnel closed by the broker (a takeover, a shutdown, a
   business server's close) would lose what the client had sent just before; here they
   are handed to the application until the client's own close frame ends the stream,
   and the application decides (``tunnels/connect.py`` relays them unless the close was
   for abuse).

And a text message that is not UTF-8 fails the connection with 1007 quietly (stock
uvicorn logged a traceback for each, and crashed when the client's close frame came in
the same read). Everything else (framing, keepalive pings, limits) is uvicorn's and
``websockets``', unchanged.

**The handshake from the parsed head.** uvicorn's HTTP protocol hands an upgrade over
with its head already parsed (``upgrade``, called by ``http/guard.py``): the handshake is
checked and answered by ``handshake.py`` with ``websockets``' rules, instead of the head
being written out again for ``websockets`` to parse; after the 101 ``websockets``' frame
protocol takes over. Bytes the client sends before the 101 wait for it.

**The tunnel's own path, past ASGI.** Once a tunnel is open its messages skip the ASGI
queue: each goes straight to the tunnel's reader (``consumer``, ``tunnels/reader.py``),
which takes it or says to hold it; held messages wait here, in order, with the socket's
reading paused, until the reader ``resume``s. And a push writes its frame, encoded once
for all its sockets (``frames.py``), straight to the transport (``write_message``). Per
message that saves a dictionary, a queue, a task switch and two system calls (reading
paused and resumed), and on the way out a frame object per socket
(docs/performance.md, issue #16). ASGI still carries the handshake and the disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol, cast
from urllib.parse import unquote

from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_path_with_query_string,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.protocol import Protocol as FrameProtocol
from websockets.protocol import Side, State

from tunnel_broker.tunnels import frames, handshake
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.writer import Message, Step

logger = logging.getLogger("tunnel_broker.tunnels.protocol")


class Consumer(Protocol):
    def frame(self, payload: str | bytes) -> bool:
        """Take one message of the client; False: hold it, and what follows, until
        ``TunnelProtocol.resume``."""


class Inbox:
    """The ASGI events a tunnel's socket still queues (its connect, its disconnect, and
    messages only before a reader takes them): a list and one waiter, where
    ``asyncio.Queue`` weighed 1.5 KB on every idle socket. One consumer, the handler."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


# The ASGI scope extension under which the handler finds its socket.
SOCKET_EXTENSION = "tunnel_broker.socket"
# What a client may send before the handshake's answer, kept for after it.
_EARLY_BYTES = 64 * 1024


class TunnelProtocol(WebSocketsSansIOProtocol):
    """See the module docstring; installed with ``uvicorn.Config(ws=TunnelProtocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set once the application returned: nobody will consume messages any more, so
        # none is kept and no deadline waits for the application.
        self.app_done = False
        self.consumer: Consumer | None = None
        self._held: deque[str | bytes] | None = None  # messages the consumer held back
        self.queue = Inbox()  # type: ignore[assignment]
        # Set by ``upgrade`` (the broker's own handshake) until the handshake completes.
        self._accept: str | None = None
        self._early: list[bytes] | None = None  # bytes the client sent before our 101

    # ---- the opening handshake, from the head uvicorn parsed ------------------------------

    def upgrade(self, request: dict[str, Any], target: bytes) -> None:
        """Take over a connection whose upgrade request uvicorn's HTTP protocol has parsed
        (``request`` is its HTTP scope, ``target`` the raw request target), instead of
        having its head rebuilt as bytes and parsed again (``handshake.py``)."""
        verdict = handshake.check(request["method"], request["http_version"], request["headers"])
        if isinstance(verdict, handshake.Refusal):
            self.handshake_complete = self.close_sent = True
            self.transport.write(verdict.response())
            self.transport.close()
            return
        try:
            path = target.decode("ascii")
        except UnicodeDecodeError:
            self.handshake_complete = self.close_sent = True
            self.transport.write(handshake.Refusal(400, "invalid request target").response())
            self.transport.close()
            return
        raw_path, _, query = path.partition("?")
        root = self.root_path
        extensions: dict[str, Any] = {"websocket.http.response": {}, SOCKET_EXTENSION: self}
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": (root + raw_path).encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": request["headers"],
            "subprotocols": verdict.subprotocols,
            "state": request["state"],
            "extensions": extensions,
        }
        self._accept = verdict.accept
        self._early = []
        self.handshake_initiated = True
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)

    def data_received(self, data: bytes) -> None:
        early = self._early
        if early is None:
            super().data_received(data)
            return
        # The client spoke before our 101 (RFC 6455 says it must wait): keep a little of
        # it for the frame parser, in order; more is not a client worth waiting for.
        early.append(data)
        if sum(map(len, early)) > _EARLY_BYTES:
            self._early = None
            self.handshake_complete = self.close_sent = True
            self.transport.close()

    def _switch_protocols(self, message: Any, accept: str) -> None:
        """Our 101, then ``websockets``' frame protocol for the rest of the socket's life."""
        self._accept = None
        early, self._early = self._early, None
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                '%s - "WebSocket %s" [accepted]',
                get_client_addr(self.scope),
                get_path_with_query_string(self.scope),
            )
        headers = list(self.default_headers)
        headers += [(n.lower(), v) for n, v in message.get("headers", ())]
        self.handshake_complete = True
        self.transport.write(
            handshake.switching_protocols(accept, message.get("subprotocol"), headers)
        )
        # Only frames from here on: the handshake's parser (a ServerProtocol, which
        # uvicorn's code needs only before the 101) would be dead weight.
        self.conn = cast(
            Any,
            FrameProtocol(
                Side.SERVER,
                state=State.OPEN,
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            ),
        )
        self.start_keepalive()
        cast(dict[str, Any], self.scope).clear()  # the handler read what it needs already
        if early:
            self.data_received(b"".join(early))

    def handle_connect(self, event: Any) -> None:
        """The handshake through ``websockets`` (a connection not handed over by
        ``upgrade``)."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # a request that became a WebSocket
            scope["extensions"][SOCKET_EXTENSION] = self

    # ---- 1. deadlines paused with reading -------------------------------------------------

    @property
    def held_by_app(self) -> bool:
        """Whether reading is paused because the application has not consumed a message."""
        return self.read_paused and not self.app_done and not self.disconnected

    def keepalive_timeout(self) -> None:
        if self.held_by_app and self.ping_timeout is not None:
            # The pong may be waiting behind messages the broker chose not to read yet.
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
            return
        super().keepalive_timeout()

    def _close_deadline(self) -> None:
        if self.held_by_app:
            self.close_timer = self.loop.call_later(self.close_timeout, self._close_deadline)
            return
        self.close_timer = None
        self.transport.close()

    # ---- 2. reading up to the client's close frame -------------------------------------

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        # After our close frame: keep the message for the application, unless it is gone
        # or the connection is being torn down.
        if self.close_sent and (self.app_done or self.transport.is_closing()):
            return
        payload: str | bytes
        if self.curr_msg_data_type == "text":
            try:
                payload = data.decode()
            except UnicodeDecodeError:
                if not self.close_sent:  # else the stream is ending anyway
                    self._invalid_text()
                return
        else:
            payload = data
        consumer = self.consumer
        if consumer is not None:
            if self._held is None and self._take(consumer, payload):
                return
            if self._held is None:
                self._held = deque()
            self._held.append(payload)
        elif isinstance(payload, str):
            self.queue.put_nowait({"type": "websocket.receive", "text": payload})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": payload})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """The consumer takes messages again: the held ones first, then reading on (unless
        it holds again)."""
        held, consumer = self._held, self.consumer
        if held is not None and consumer is not None:
            while held:
                if not self._take(consumer, held[0]):
                    return
                held.popleft()
            self._held = None
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    def _forget_handshake(self) -> None:
        """An open tunnel needs none of its handshake: its request, response and ASGI
        scope (their headers, a copy of the app state, the connect token) would stay with
        every idle socket, a few kilobytes each (``bench/broker_bench.py --memory``)."""
        # The protocol library's parser keeps the request object for the socket's life:
        # empty it (the token is in its path).
        self.request.headers = Headers()
        self.request.path = ""
        del self.request, self.response
        cast(dict[str, Any], self.scope).clear()  # the handler read what it needs already

    def _take(self, consumer: Consumer, payload: str | bytes) -> bool:
        try:
            return consumer.frame(payload)
        except Exception:
            # A bug, not the client's doing: this socket ends (1011), the others go on.
            logger.exception("tunnel reader failed; closing its socket")
            if self.conn.state is State.OPEN:
                self.conn.send_close(CloseCode.INTERNAL_ERROR, "internal_error")
                self.handle_parser_exception()
            return True

    def write_message(self, message: Message) -> Step:
        """Write one ``websocket.send`` message now, if the socket can take it: ``SENT``,
        ``FAILED`` (the socket is gone or closing), or ``WOULD_BLOCK`` (its buffer is
        full: nothing written)."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return Step.FAILED
        if not self.writable.is_set():
            return Step.WOULD_BLOCK
        self.transport.write(frames.of_message(message))
        return Step.SENT

    def _invalid_text(self) -> None:
        """A text message that is not UTF-8: fail the connection with 1007 (RFC 6455,
        8.1)."""
        if self.conn.state is not State.OPEN:
            return  # the client's close is already in: its code ends the socket
        self.conn.send_close(CloseCode.INVALID_DATA, "invalid_utf8")
        self.handle_parser_exception()

    async def send(self, message: Any) -> None:
        accept = self._accept
        if accept is not None and message["type"] == "websocket.accept":
            if self.disconnected:
                raise ClientDisconnected()
            if not self.transport.is_closing():
                self._switch_protocols(message, accept)
            return
        if (
            message["type"] != "websocket.close"
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
        ):
            await super().send(message)
            if message["type"] == "websocket.accept":
                self._forget_handshake()
            elif self.handshake_complete:  # refused before the 101: nothing more to keep
                self._accept = self._early = None
            return
        # Suspends only before writing anything (tunnels/writer.py relies on it).
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if self.transport.is_closing():
            return
        try:
            self.conn.send_close(int(message.get("code", 1000)), message.get("reason") or "")
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        # The disconnect reaches the application when the client answers (handle_close
        # closes the transport), or when the deadline passes: see connection_lost.
        self.close_timer = self.loop.call_later(self.close_timeout, self._close_deadline)

    async def run_asgi(self) -> None:
        try:
            await super().run_asgi()
        finally:
            self.app_done = True
            # The tunnel has ended (its close reported): nothing read now may follow.
            self.consumer = None
            self._held = None
            if self.read_paused and not self.transport.is_closing():
                # Nobody will consume what is queued: read on, so the close completes.
                self.read_paused = False
                self.transport.resume_reading()

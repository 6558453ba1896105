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
the same read). Everything else (handshake, framing, keepalive pings, limits) is
uvicorn's and ``websockets``', unchanged.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

from tunnel_broker.tunnels.closecodes import CloseCode


class TunnelProtocol(WebSocketsSansIOProtocol):
    """See the module docstring; installed with ``uvicorn.Config(ws=TunnelProtocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set once the application returned: nobody will consume messages any more, so
        # none is kept and no deadline waits for the application.
        self.app_done = False

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
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                if not self.close_sent:  # else the stream is ending anyway
                    self._invalid_text()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _invalid_text(self) -> None:
        """A text message that is not UTF-8: fail the connection with 1007 (RFC 6455,
        8.1)."""
        if self.conn.state is not State.OPEN:
            return  # the client's close is already in: its code ends the socket
        self.conn.send_close(CloseCode.INVALID_DATA, "invalid_utf8")
        self.handle_parser_exception()

    async def send(self, message: Any) -> None:
        if (
            message["type"] != "websocket.close"
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
        ):
            await super().send(message)
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
            if self.read_paused and not self.transport.is_closing():
                # Nobody will consume what is queued: read on, so the close completes.
                self.read_paused = False
                self.transport.resume_reading()

"""The HTTP front end's own limits, enforced before a request reaches the application.

uvicorn's HTTP protocol has no bound on how long a client may take to send a request
head, nor on how large the head may grow, and WebSocket upgrades bypass its concurrency
limit: a broker exposed directly could be held open by idle or half-sent connections, or
fed unfinished multi-megabyte headers. This protocol adds, per connection:

- a cap on open connections (tunnels included): beyond it a new connection gets ``503``
  and is closed before anything is read;
- ``header_timeout`` from the connection's start (and from each new request's first byte)
  to a complete head: an idle connection is closed, a slow one gets ``408``;
- ``max_header_bytes`` for the header lines: ``431``;
- ``MAX_URL_BYTES`` for the request target: ``414`` (a connect URL never comes near it).

And a WebSocket upgrade goes to the tunnel protocol with its head as parsed here, not
written out again for a second parser (``tunnels/handshake.py``).

Every refusal is problem details with a code of ``errors.ERROR_TABLE`` and
``connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tunnel_broker.errors import ApiError
from tunnel_broker.tunnels.protocol import TunnelProtocol

logger = logging.getLogger("tunnel_broker.http.guard")

# Below websockets' 8192-byte request line, which includes the method and version.
MAX_URL_BYTES = 8000


@dataclass(frozen=True)
class FrontEndLimits:
    max_connections: int
    header_timeout: float
    max_header_bytes: int


class _HeadRefused(Exception):
    """Stops the parser; the refusal was already answered."""


LINGER_SECONDS = 2.0  # how long a refused connection's late bytes are read and dropped


def _response(error: ApiError) -> bytes:
    body = json.dumps(error.problem()).encode()
    status = error.spec.status
    return (
        f"HTTP/1.1 {status} {error.spec.title}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


def guarded_http_protocol(limits: FrontEndLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits`` (a class per configuration: uvicorn
    builds protocols from a class and its own config)."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0
            # Raw bytes of the head being received: the parser buffers an unfinished
            # header line whole before any callback sees it, so lines are bounded here.
            self._raw_head = 0
            self._in_head = True
            self._received = False
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(
                    ApiError(
                        "too_many_connections",
                        f"this broker holds its maximum of {limits.max_connections} connections",
                        headers={"retry-after": "1"},
                    ),
                    linger=False,  # over the cap: not one more connection held meanwhile
                )
                return
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            self._received = True
            if self._in_head:
                end = data.find(b"\r\n\r\n")
                self._raw_head += len(data) if end < 0 else end + 4
                if self._raw_head > limits.max_header_bytes + MAX_URL_BYTES + 64:
                    self._refuse_headers()
                    return
            # uvicorn's data_received, except that an upgrade keeps the bytes that came
            # after the head in the same read: frames a client sent without waiting for
            # the 101 (stock uvicorn drops them).
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():
                    self._upgrade(data[upgrade.args[0] :])
                else:
                    self._unsupported_upgrade_warning()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._head_timer is None:
                self._start_head_timer()

        def on_url(self, url: bytes) -> None:
            if len(self.url) + len(url) > MAX_URL_BYTES:
                self._refuse(
                    ApiError(
                        "uri_too_long", f"request targets are limited to {MAX_URL_BYTES} bytes"
                    )
                )
                raise _HeadRefused
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            if self._head_bytes > limits.max_header_bytes:
                self._refuse_headers()
                raise _HeadRefused
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True
            self._raw_head = 0
            super().on_message_complete()

        def _refuse_headers(self) -> None:
            self._refuse(
                ApiError(
                    "headers_too_large",
                    f"request headers are limited to {limits.max_header_bytes} bytes",
                )
            )

        def _upgrade(self, rest: bytes) -> None:
            """Hand the parsed head to the tunnel protocol, which answers the handshake
            itself (``tunnels/handshake.py``); stock uvicorn rebuilds the head as bytes
            for a second parser."""
            protocol_class = self.ws_protocol_class
            if protocol_class is None or not issubclass(protocol_class, TunnelProtocol):
                self.handle_websocket_upgrade()
                return
            self.connections.discard(self)
            protocol = protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.app_state
            )
            protocol.connection_made(self.transport)
            self.transport.set_protocol(protocol)
            protocol.upgrade(cast(dict[str, Any], self.scope), self.url)
            if rest and not self.transport.is_closing():  # not refused
                protocol.data_received(rest)

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # a refusal above already answered
                super().send_400_response(msg)

        def _start_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self._refused:
                return
            if not self._received:
                self._refused = True
                self.transport.close()  # idle since it connected: nothing to answer
                return
            self._refuse(
                ApiError(
                    "request_timeout",
                    f"the request head did not arrive within {limits.header_timeout:g} s",
                )
            )

        def _refuse(self, error: ApiError, linger: bool = True) -> None:
            self._refused = True
            self._stop_head_timer()
            logger.info("connection refused: %s", error.code)
            transport = self.transport
            transport.write(_response(error))
            if not linger or not transport.can_write_eof():
                transport.close()
                return
            # A lingering close: the answer leaves with a FIN, and what the client is
            # still sending (a dribbled or oversized head) is read and dropped for a
            # moment. Closing at once would answer those bytes with a reset, which can
            # destroy the answer before the client reads it.
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    return GuardedHttpProtocol

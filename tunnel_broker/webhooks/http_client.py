"""A small HTTP/1.1 client for one job: POST a webhook batch, read the answer.

Why not a general client: delivery makes a request for nearly every client message at
moderate rates, and there general clients cost several times the CPU of the rest of the
round trip (``bench/webhook_client_cost.py``: httpx ~1.2 ms, aiohttp ~0.2 ms, this ~0.05 ms
per request). Parsing is httptools' (llhttp, the parser of Node.js); what is left here is
connection keep-alive, timeouts and size bounds. Not supported, on purpose: proxies,
redirects (a webhook URL that redirects is a misconfiguration), compression, HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from tunnel_broker.errors import BodyTooLarge, WebhookHttpError

__all__ = ["BodyTooLarge", "WebhookClient", "WebhookHttpError", "WebhookResponse"]

MAX_HEADER_BYTES = 64 * 1024


class _NothingSent(Exception):
    """A reused connection failed before any response byte arrived."""


@dataclass(slots=True)
class WebhookResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    host_header: str


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[WebhookResponse]
    max_body: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    header_bytes: int = 0
    started: bool = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: _Pending | None = None
        self.closed = False
        self.keep_alive = True
        self.error: BodyTooLarge | None = None
        self.parser = httptools.HttpResponseParser(self)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        pending = self.pending
        if pending is None:
            self._close()  # a response nobody asked for
            return
        pending.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(WebhookHttpError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            # A callback's own exception reaches us wrapped by the parser.
            self._fail(self.error or WebhookHttpError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pending is not None and not self.pending.future.done():
            self.pending.future.set_exception(
                WebhookHttpError("connection closed before the response was complete")
            )
        self.pending = None

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        assert self.pending is not None
        self.pending.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        pending = self.pending
        assert pending is not None
        pending.header_bytes += len(name) + len(value)
        if pending.header_bytes > MAX_HEADER_BYTES:
            self.error = BodyTooLarge("response headers too large", pending.status)
            raise self.error
        pending.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.pending is not None
        self.pending.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        pending = self.pending
        assert pending is not None
        pending.size += len(body)
        if pending.size > pending.max_body:
            self.error = BodyTooLarge(
                f"response body over {pending.max_body} bytes", pending.status
            )
            raise self.error
        pending.chunks.append(body)

    def on_message_complete(self) -> None:
        pending = self.pending
        assert pending is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.pending = None
        if not pending.future.done():
            pending.future.set_result(
                WebhookResponse(pending.status, pending.headers, b"".join(pending.chunks))
            )

    # helpers

    def _fail(self, exc: Exception) -> None:
        pending = self.pending
        self.pending = None
        # Nothing may keep the refused body alive: the exception's traceback holds the
        # parser callback's frame (and its chunk), and the pending request its chunks,
        # in a cycle only a full garbage collection would break (4 MB a refused reply).
        self.error = None
        exc = exc.with_traceback(None)
        if pending is not None:
            pending.chunks.clear()
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._close()

    def expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            pending.future.set_exception(TimeoutError())
        self.pending = None
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def request(self, data: bytes, max_body: int) -> _Pending:
        assert self.transport is not None and self.pending is None
        pending = _Pending(asyncio.get_running_loop().create_future(), max_body)
        self.pending = pending
        self.transport.write(data)
        return pending


class WebhookClient:
    def __init__(self, user_agent: str, max_idle_per_origin: int = 32) -> None:
        self.user_agent = user_agent
        self.max_idle = max_idle_per_origin
        self._idle: dict[_Origin, list[_Connection]] = defaultdict(list)
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def _origin(self, url: str) -> tuple[_Origin, str]:
        cached = self._origins.get(url)
        if cached is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise WebhookHttpError("webhook URL must be http(s)://host/...")
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
            host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            cached = (_Origin(parts.scheme, parts.hostname, port, host_header), path)
            if len(self._origins) > 1024:
                self._origins.clear()
            self._origins[url] = cached
        return cached

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, protocol = await loop.create_connection(
                _Connection,
                origin.host,
                origin.port,
                ssl=context,
                server_hostname=origin.host if context else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise WebhookHttpError(f"cannot connect: {type(exc).__name__}") from None
        return protocol

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        seconds: float,
        max_body: int,
    ) -> WebhookResponse:
        """POST ``body``; raise ``WebhookHttpError`` (or ``TimeoutError``) on failure."""
        if self._closed:
            raise WebhookHttpError("client closed")
        origin, path = self._origin(url)
        head = [
            f"POST {path} HTTP/1.1\r\nhost: {origin.host_header}\r\n"
            f"user-agent: {self.user_agent}\r\ncontent-length: {len(body)}\r\n"
        ]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append("\r\n")
        data = "".join(head).encode("latin-1") + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        idle = self._idle[origin]
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                response = await self._exchange(connection, data, max_body, deadline)
            except _NothingSent:
                # The server dropped an idle keep-alive connection just as we reused it;
                # nothing was processed, so a fresh connection may try again.
                continue
            self._release(origin, connection)
            return response
        remaining = deadline - loop.time()
        connection = await asyncio.wait_for(self._connect(origin), max(remaining, 0.001))
        try:
            response = await self._exchange(connection, data, max_body, deadline)
        except _NothingSent:
            raise WebhookHttpError("connection closed before the response was complete") from None
        self._release(origin, connection)
        return response

    @staticmethod
    async def _exchange(
        connection: _Connection, data: bytes, max_body: int, deadline: float
    ) -> WebhookResponse:
        # A timer on the loop rather than asyncio.timeout(): this runs per webhook
        # request, and the timer is a fraction of the cost.
        pending = connection.request(data, max_body)
        timer = asyncio.get_running_loop().call_at(deadline, connection.expire, pending)
        try:
            return await pending.future
        except WebhookHttpError:
            if not pending.started:
                raise _NothingSent from None
            raise
        finally:
            timer.cancel()

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle[origin]
        if (
            connection.keep_alive
            and not connection.closed
            and not self._closed
            and len(idle) < self.max_idle
        ):
            idle.append(connection)
        else:
            connection._close()

    async def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection._close()
        self._idle.clear()

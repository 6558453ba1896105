"""``SyncTunnelBroker``: the blocking client for the broker's HTTP API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import httpx

from business_sdk import _api
from business_sdk._api import Call
from business_sdk._http import DEFAULT_TIMEOUT, Endpoint, read_response
from business_sdk._models import (
    CreatedTunnel,
    Message,
    SendResult,
    Session,
    TunnelInfo,
    TunnelPage,
)
from business_sdk._pages import PageCall, Pager
from business_sdk._payload import Data
from business_sdk._retry import RetryPolicy, RetryState, map_transport_error
from business_sdk._targets import Target

T = TypeVar("T")


class SyncTunnelBroker:
    """Blocking twin of ``TunnelBroker`` (same calls, same results): for Flask, Django, scripts.

    ``base_url`` and ``api_key`` default to ``$TUNNEL_BROKER_URL`` / ``$TUNNEL_BROKER_API_KEY``.
    Pass ``http_client`` to share an ``httpx.Client`` (its pool, proxies, TLS settings);
    the SDK then leaves closing it to you.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._endpoint = Endpoint(base_url, api_key, shared_client=http_client is not None)
        self._retry = retry or RetryPolicy()
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(timeout=timeout, headers=self._endpoint.headers)
        self._sleep: Callable[[float], None] = time.sleep  # tests replace it

    def __repr__(self) -> str:
        return f"SyncTunnelBroker(base_url={self._endpoint.base_url!r})"

    def __enter__(self) -> SyncTunnelBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client created it). Safe to call twice."""
        if self._owns_client:
            self._client.close()

    def _execute(self, call: Call[T]) -> T:
        state = RetryState(self._retry, call.idempotent)
        request = self._endpoint.build(self._client, call)
        while True:
            try:
                response = self._client.send(request)
            except httpx.TransportError as exc:
                delay = state.after_error(exc)
                if delay is None:
                    raise map_transport_error(exc, f"{call.method} {call.path}") from exc
            else:
                delay = state.after_response(response)
                if delay is None:
                    return read_response(call, response)
            self._sleep(delay)

    # ------------------------------------------------------------------ tunnels

    def create_tunnel(
        self,
        user_id: str,
        *,
        identity: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        groups: Iterable[str] | None = None,
        ttl: float | timedelta | None = None,
    ) -> CreatedTunnel:
        """Hand a tunnel to a logged-in user: the returned ``connect_url`` carries a signed token
        with ``identity`` (who the user is, echoed on every webhook event), ``meta`` and the
        initial ``groups``; ``ttl`` is how long the URL stays usable (seconds)."""
        call = _api.create_tunnel(user_id, identity=identity, meta=meta, groups=groups, ttl=ttl)
        return self._execute(call)

    def close_tunnel(
        self, tunnel_id: str, *, code: int | None = None, reason: str | None = None
    ) -> bool:
        """Close one tunnel (``code`` 1000 or 4000-4999); ``False`` if it was not open."""
        return self._execute(_api.close_tunnel(tunnel_id, code=code, reason=reason))

    def close_user(
        self, user_id: str, *, code: int | None = None, reason: str | None = None
    ) -> int:
        """Close every tunnel of a user (e.g. on logout); returns how many were closed."""
        return self._execute(_api.close_user(user_id, code=code, reason=reason))

    # ------------------------------------------------------------------ messages

    def send(self, to: Target, data: Data) -> SendResult:
        """Send one payload: ``str`` as a text frame, ``bytes`` as a binary frame."""
        return self._execute(_api.send([Message(to, data)]))

    def send_many(self, messages: Iterable[Message]) -> SendResult:
        """Send several messages in one request, in order; one result for the whole batch."""
        return self._execute(_api.send(messages))

    # ------------------------------------------------------------------ groups

    def join(self, group: str, tunnel_id: str) -> None:
        """Add an open tunnel to a group (raises ``TunnelNotConnectedError`` if it is not open)."""
        self._execute(_api.join(group, tunnel_id))

    def leave(self, group: str, tunnel_id: str) -> None:
        """Remove an open tunnel from a group."""
        self._execute(_api.leave(group, tunnel_id))

    # ------------------------------------------------------------------ WeChat sessions

    def resolve_session(self, skey: str) -> Session | None:
        """The WeChat user a mini-program's ``skey`` (its ``X-WX-Skey`` header) stands for, as
        the broker verified it at login; ``None`` if the skey names no live session of this
        app (unknown, expired, revoked, or not an skey at all). Each use renews the session."""
        return self._execute(_api.resolve_session(skey))

    def revoke_session(self, skey: str) -> int:
        """End one session at once (the user must log in again); returns 1, or 0 if it was not
        a live session of this app. Open tunnels are not closed: see ``close_user``."""
        return self._execute(_api.revoke_session(skey))

    def revoke_user_sessions(self, openid: str) -> int:
        """End every session of a WeChat user in this app; returns how many there were."""
        return self._execute(_api.revoke_user_sessions(openid))

    # ------------------------------------------------------------------ presence

    def get_tunnel(self, tunnel_id: str) -> TunnelInfo | None:
        """The open tunnel with this id, or ``None`` if it is not connected."""
        return self._execute(_api.get_tunnel(tunnel_id))

    def user_tunnels_page(
        self, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> TunnelPage:
        """One page of a user's open tunnels; for all of them iterate ``user_tunnels``."""
        return self._execute(_api.user_tunnels_page(user_id, limit=limit, cursor=cursor))

    def group_tunnels_page(
        self, group: str, *, limit: int | None = None, cursor: str | None = None
    ) -> TunnelPage:
        """One page of a group's open tunnels; for all of them iterate ``group_tunnels``."""
        return self._execute(_api.group_tunnels_page(group, limit=limit, cursor=cursor))

    def user_tunnels(self, user_id: str, *, page_size: int | None = None) -> Iterator[TunnelInfo]:
        """Every open tunnel of a user, fetching pages as the iteration needs them."""
        return self._walk(
            lambda cursor: _api.user_tunnels_page(user_id, limit=page_size, cursor=cursor)
        )

    def group_tunnels(self, group: str, *, page_size: int | None = None) -> Iterator[TunnelInfo]:
        """Every open tunnel in a group, fetching pages as the iteration needs them."""
        return self._walk(
            lambda cursor: _api.group_tunnels_page(group, limit=page_size, cursor=cursor)
        )

    def _walk(self, make_call: PageCall) -> Iterator[TunnelInfo]:
        pager = Pager(make_call)
        while not pager.done:
            page = self._execute(pager.next_call())
            yield from pager.accept(page)

"""Turning a ``Call`` into an httpx request and an httpx response into a value or an error.

Shared by both clients; nothing here does I/O.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from business_sdk._api import Call
from business_sdk._exceptions import APIError, UnexpectedResponseError, error_class
from business_sdk._retry import parse_retry_after
from business_sdk._version import __version__

T = TypeVar("T")

ENV_BASE_URL = "TUNNEL_BROKER_URL"
ENV_API_KEY = "TUNNEL_BROKER_API_KEY"
DEFAULT_TIMEOUT = 10.0
USER_AGENT = f"tunnel-broker-python/{__version__}"


class Endpoint:
    """Where the broker is and how to authenticate: the per-client constants of every request.

    A client the SDK creates gets the auth and user-agent headers as its defaults, so requests
    carry no per-call header dict for httpx to merge (a measurable share of the per-call CPU,
    see ``bench/sdk_overhead.py``); a caller's shared client gets them on each request instead,
    leaving its own defaults untouched. The API key is kept out of ``repr``.
    """

    __slots__ = ("_request_headers", "base_url", "headers")

    def __init__(self, base_url: str | None, api_key: str | None, *, shared_client: bool) -> None:
        base_url = base_url or os.environ.get(ENV_BASE_URL)
        api_key = api_key or os.environ.get(ENV_API_KEY)
        if not base_url:
            raise ValueError(f"give base_url or set {ENV_BASE_URL}")
        if not api_key:
            raise ValueError(f"give api_key or set {ENV_API_KEY}")
        self.base_url = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}", "user-agent": USER_AGENT}
        self._request_headers = self.headers if shared_client else None

    def build(self, client: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        # httpx's ``json=`` encodes compactly with ensure_ascii=False (UTF-8, not \u escapes).
        return client.build_request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            headers=self._request_headers,
            json=call.body,
        )


def api_error(call: Call[Any], response: httpx.Response) -> APIError:
    """The exception for a non-2xx answer, read from its problem-details body when it has one
    (a proxy's HTML error page still gives a typed error by status)."""
    problem: Mapping[str, Any] = {}
    if "json" in response.headers.get("content-type", ""):
        try:
            decoded = json.loads(response.content)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            problem = decoded

    def text(key: str) -> str | None:
        value = problem.get(key)
        return value if isinstance(value, str) else None

    status = response.status_code
    code = text("code")
    return error_class(status, code)(
        status,
        code=code,
        title=text("title"),
        detail=text("detail") or (None if problem else response.reason_phrase or None),
        type=text("type"),
        problem=problem,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        method=call.method,
        path=call.path,
    )


def read_response(call: Call[T], response: httpx.Response) -> T:
    """The call's value for a 2xx answer; otherwise its recovery value or the typed error."""
    if 200 <= response.status_code < 300:
        try:
            body = json.loads(response.content) if response.content else {}
            return call.parse(body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnexpectedResponseError(
                f"{call.method} {call.path}: the {response.status_code} answer does not match "
                f"the API contract ({exc!r})"
            ) from exc
    error = api_error(call, response)
    if call.recover is not None:
        return call.recover(error)
    raise error

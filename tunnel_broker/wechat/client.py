"""An async client for WeChat's jscode2session, with retries and no leaked secrets.

Only two failures are retried, both known to leave the code unused: ``errcode -1`` (WeChat
busy) and a connection that could not be opened. A timeout or dropped connection after the
request was sent is not retried: WeChat may have consumed the code, and a retry would only
turn the real problem into ``CodeAlreadyUsed``.

WeChat takes the app secret in the query string. Constructing a client attaches
``SecretQueryFilter`` to the loggers that log URLs (see ``redaction``), and no exception raised
here mentions the secret, the code or the session_key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

import httpx

from tunnel_broker.wechat.code2session import (
    JSCODE2SESSION_PATH,
    Code2Session,
    check_code,
    parse_response,
    request_params,
)
from tunnel_broker.wechat.errors import (
    UnexpectedResponse,
    WeChatBusy,
    WeChatError,
    WeChatUnavailable,
)
from tunnel_broker.wechat.redaction import REDACTED, install_log_redaction, redact_query_secrets
from tunnel_broker.wechat.retry import RetryPolicy

logger = logging.getLogger(__name__)

WECHAT_API_BASE = "https://api.weixin.qq.com"
DEFAULT_RETRY_POLICY = RetryPolicy()
MAX_ANSWER_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 5.0


class WeChatClient:
    """Exchanges login codes at ``{base_url}/sns/jscode2session``.

    Pass ``http`` to share a connection pool; the caller then closes it. Otherwise the client
    owns one, closed by ``aclose()`` or ``async with``.
    """

    def __init__(
        self,
        base_url: str = WECHAT_API_BASE,
        *,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        timeout: float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        install_log_redaction()
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + JSCODE2SESSION_PATH
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(follow_redirects=False)
        self._retry = retry
        self._timeout = timeout
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WeChatClient(base_url={self.base_url!r})"

    async def code_to_session(self, appid: str, secret: str, code: str) -> Code2Session:
        """Exchange a ``wx.login`` code for the user's openid, session_key and unionid.

        Raises a ``Code2SessionError``: ``InvalidCode``, ``CodeAlreadyUsed``, ``RateLimited``,
        ``WeChatBusy`` (after the retries), ``InvalidAppId``/``InvalidAppSecret``, another
        ``WeChatApiError``, ``WeChatUnavailable`` or ``UnexpectedResponse``.
        """
        check_code(code, appid=appid)
        params = request_params(appid, secret, code)
        hide = (secret, code)
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return await self._exchange(appid, params, hide)
            except _Retryable as retryable:
                failure = retryable.error
            if attempt == self._retry.attempts:
                raise failure from failure.__cause__
            delay = self._retry.delay(attempt)
            logger.info(
                "%s; retry %d of %d in %.3fs", failure, attempt, self._retry.attempts - 1, delay
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _exchange(
        self, appid: str, params: dict[str, str], hide: tuple[str, ...]
    ) -> Code2Session:
        try:
            async with self._http.stream(
                "GET", self._url, params=params, timeout=self._timeout
            ) as response:
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                content = await _read_capped(response)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = WeChatUnavailable(f"cannot connect to {self.base_url}: {_describe(exc, hide)}")
            error.__cause__ = exc
            raise _Retryable(error) from None
        except httpx.HTTPError as exc:
            raise WeChatUnavailable(
                f"jscode2session request to {self.base_url} failed: {_describe(exc, hide)}"
            ) from exc
        try:
            return parse_response(
                status, content, appid=appid, content_type=content_type, hide=hide
            )
        except WeChatBusy as busy:
            raise _Retryable(busy) from None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> WeChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _read_capped(response: httpx.Response) -> bytes:
    """The answer's body, refused past ``MAX_ANSWER_BYTES`` before it is all in memory:
    jscode2session answers a few hundred bytes, anything much larger is not WeChat."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UnexpectedResponse(
                f"jscode2session answer exceeds {MAX_ANSWER_BYTES} bytes",
                status_code=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


class _Retryable(Exception):
    """Carries a failure that left the code unused, so trying again is safe."""

    def __init__(self, error: WeChatError) -> None:
        super().__init__(str(error))
        self.error = error


def _describe(exc: httpx.HTTPError, hide: tuple[str, ...]) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for value in hide:
        if value:
            text = text.replace(value, REDACTED)
    return redact_query_secrets(text)

"""When to send a request again, and how long to wait first.

Retries are decided per attempt by ``RetryState`` from what happened (an httpx exception or a
response) and whether the operation is idempotent; the clients only sleep and resend. The rules:

* a connection that could not be made (connect error or timeout, no free pooled connection):
  retried for every operation, because the broker never saw the request;
* an answer lost after the request was sent (read/write error, read timeout, dropped
  connection): retried only for idempotent operations, because a send might have gone out;
* ``429 rate_limited`` and ``503 draining``/``backend_unavailable``: retried for every
  operation, because the broker refused before acting, honouring ``Retry-After``; a
  ``Retry-After`` longer than ``max_retry_after`` is not slept through, the error is raised
  with ``retry_after`` set so the caller can decide;
* ``502``/``504`` from a proxy in front of the broker: retried only for idempotent operations.

Delays are exponential with full jitter, so many business servers retrying after one broker
restart do not arrive together.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

from business_sdk._exceptions import ConnectError, RequestTimeoutError, TransportError

logger = logging.getLogger("business_sdk")

_ALWAYS_RETRY_STATUSES = frozenset({429, 503})
_IDEMPOTENT_RETRY_STATUSES = frozenset({502, 504})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times, and how patiently, to retry. ``RetryPolicy(max_retries=0)`` disables
    retries; ``rng`` is injectable so tests get deterministic delays."""

    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1 = first): uniform in ``[0, base * 2**(n-1)]``,
        capped at ``backoff_max``."""
        bound = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, retry - 1))
        return self.rng() * bound


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if
    absent or unreadable, never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def map_transport_error(exc: httpx.TransportError, what: str) -> TransportError:
    """The SDK's exception for an httpx one; the caller raises it ``from exc``."""
    if isinstance(exc, _NOT_SENT):
        return ConnectError(f"{what}: could not connect to the broker: {exc!r}")
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(f"{what}: no answer from the broker in time: {exc!r}")
    return TransportError(f"{what}: {exc!r}")


class RetryState:
    """The retry decisions for one call; ``retries`` counts the resends made so far."""

    __slots__ = ("_idempotent", "_policy", "retries")

    def __init__(self, policy: RetryPolicy, idempotent: bool) -> None:
        self._policy = policy
        self._idempotent = idempotent
        self.retries = 0

    def _next(self, delay: float, why: str) -> float | None:
        if self.retries >= self._policy.max_retries:
            return None
        self.retries += 1
        logger.info("retrying in %.2fs (retry %d): %s", delay, self.retries, why)
        return delay

    def after_error(self, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before resending, or ``None`` to give up and raise."""
        retryable = isinstance(exc, _NOT_SENT) or (
            self._idempotent and isinstance(exc, _MAYBE_SENT)
        )
        if not retryable:
            return None
        return self._next(self._policy.backoff(self.retries + 1), repr(exc))

    def after_response(self, response: httpx.Response) -> float | None:
        """Seconds to wait before resending, or ``None`` when the response is final."""
        status = response.status_code
        if status not in _ALWAYS_RETRY_STATUSES and not (
            self._idempotent and status in _IDEMPOTENT_RETRY_STATUSES
        ):
            return None
        backoff = self._policy.backoff(self.retries + 1)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            if retry_after > self._policy.max_retry_after:
                return None
            # Honour the broker's wait, plus a little jitter so clients told the same
            # Retry-After do not come back in lockstep.
            backoff = retry_after + self._policy.rng() * self._policy.backoff_base
        return self._next(backoff, f"HTTP {status}")

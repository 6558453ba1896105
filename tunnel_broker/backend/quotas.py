"""An app's quotas, all pods together: tunnels open at once (``max_tunnels``) and
messages per UTC period (``message_quota``), and the warning that usage nears them.

Each backend has its ``quotas`` (``Backend.quotas``). The tunnel quota is enforced by
the backend's ``attach``, in the same step as the registration; this object counts
messages and words the warning. Limits are read from the app as the caller has it now
(an operator may change them at run time): a raised quota lets messages through at
once, a lowered one gives back what was reserved under the old one.

Messages: a client's message is ``check``ed by its socket's reader, which holds the
socket while a reservation is under way (nothing is lost) and closes it 4429 when the
quota is used up; a push is ``acquire``d by the API or the webhook reply that sends it,
all messages of one request at once or none.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from tunnel_broker.apps import App, AppLimits
from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.errors import MessageQuotaExceeded
from tunnel_broker.usage.periods import Period, period_of

WARNING_HEADER = "tb-quota-warning"
ACQUIRE_SECONDS = 10.0  # longest a push waits for other pods to use or return allowance
RETRY_SECONDS = 0.25  # a held socket looks again this often while the ledger is down

Verdict = bool | Awaitable[None]


class Quotas(ABC):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # the calendar the periods follow (tests move it)
        self._tunnels_seen: dict[str, tuple[int, int]] = {}  # app -> (open, limit)

    # ---- messages ---------------------------------------------------------------------

    @abstractmethod
    def admit(self, app_id: str, limits: AppLimits, n: int) -> Verdict:
        """Whether ``n`` messages of an app with a ``message_quota`` may go now (then
        ``take`` them without awaiting anything in between): True, False (the quota
        does not have them this period), or something to wait for (which may raise
        ``BackendUnavailable``) before asking again."""

    @abstractmethod
    def take(self, app_id: str, n: int) -> None:
        """Count ``n`` messages that ``admit`` let through."""

    @abstractmethod
    def used(self, app_id: str, limits: AppLimits) -> int:
        """Messages counted in the current period, as far as this pod knows."""

    def check(self, app_id: str, limits: AppLimits, n: int = 1) -> Verdict:
        """``admit`` for a socket's reader: what it waits for never raises (while the
        ledger cannot be reached it waits, then the reader asks again)."""
        verdict = self.admit(app_id, limits, n)
        if verdict is True or verdict is False:
            return verdict
        return _patiently(verdict)

    async def acquire(self, app_id: str, limits: AppLimits, n: int) -> None:
        """Count ``n`` messages the business server sends, or refuse them all with
        ``MessageQuotaExceeded`` (``BackendUnavailable`` if the ledger cannot say)."""
        deadline = time.monotonic() + ACQUIRE_SECONDS
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            verdict = self.admit(app_id, limits, n)
            if verdict is True:
                self.take(app_id, n)
                return
            if verdict is False or time.monotonic() > deadline:
                raise self.exceeded(limits, n)
            # Shielded: the reservation is shared, and this request may be cancelled.
            await asyncio.shield(verdict)

    def exceeded(self, limits: AppLimits, n: int) -> MessageQuotaExceeded:
        period = self.period(limits)
        wait = max(1, int(period.end - self.clock()) + 1)
        many = "this message" if n == 1 else f"these {n} messages"
        return MessageQuotaExceeded(
            f"{many} would exceed the app's message_quota of {limits.message_quota} "
            f"this {period.kind} (UTC); it starts again in {wait} s",
            headers={"retry-after": str(wait)},
        )

    def period(self, limits: AppLimits) -> Period:
        return period_of(limits.message_quota_period, self.clock())

    # ---- tunnels and the warning ---------------------------------------------------

    @abstractmethod
    async def tunnels_open(self, app_id: str) -> int:
        """The app's tunnels open now, all pods together (as of a moment ago)."""

    async def warning(self, app: App) -> str | None:
        """The ``tb-quota-warning`` header for an answer to ``app``: one member per
        quota whose use reached ``quota_warning_ratio`` of it, or None."""
        limits = app.limits
        members = []
        quota = limits.message_quota
        if quota is not None:
            used = self.used(app.id, limits)
            if used >= quota * limits.quota_warning_ratio:
                period = self.period(limits)
                members.append(
                    f"messages; used={used}; limit={quota}; period={period.kind}; "
                    f"reset={int(period.end)}"
                )
        max_tunnels = limits.max_tunnels
        if max_tunnels is not None:
            count = await self.tunnels_open(app.id)
            self._tunnels_seen[app.id] = (count, max_tunnels)
            if count >= max_tunnels * limits.quota_warning_ratio:
                members.append(f"tunnels; used={count}; limit={max_tunnels}")
        return ", ".join(members) or None

    def ratios(self) -> dict[tuple[str, str], float]:
        """(app, quota) -> share used, as last seen: messages in the current period,
        tunnels as of the app's last API answer (for a gauge; no I/O)."""
        out = {(app_id, "tunnels"): n / limit for app_id, (n, limit) in self._tunnels_seen.items()}
        out.update(self._message_ratios())
        return out

    @abstractmethod
    def _message_ratios(self) -> dict[tuple[str, str], float]: ...

    def start(self) -> None:  # noqa: B027 - optional hook
        """Begin the upkeep (returning unused allowance, reporting use)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Report what was used and give back what is held."""


async def _patiently(waiting: Awaitable[None]) -> None:
    try:
        # Shielded: the reservation is shared, and a held socket stops waiting when its
        # tunnel closes.
        await asyncio.shield(waiting)
    except Exception:  # the ledger is down: the socket stays held, and asks again
        await asyncio.sleep(RETRY_SECONDS)


class _Count:
    __slots__ = ("period", "quota", "used")

    def __init__(self, period: Period) -> None:
        self.period = period
        self.used = 0
        self.quota = 0  # as last checked


class LocalQuotas(Quotas):
    """One process is all there is: a counter per app and period."""

    def __init__(
        self, count_tunnels: Callable[[str], int], clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock)
        self.count_tunnels = count_tunnels
        self._counts: dict[str, _Count] = {}

    def _count(self, app_id: str, kind: str) -> _Count:
        count = self._counts.get(app_id)
        if count is None or self.clock() >= count.period.end or count.period.kind != kind:
            count = self._counts[app_id] = _Count(period_of(kind, self.clock()))
        return count

    def admit(self, app_id: str, limits: AppLimits, n: int) -> Verdict:
        quota = limits.message_quota
        if quota is None:
            return True
        count = self._count(app_id, limits.message_quota_period)
        count.quota = quota
        return count.used + n <= quota

    def take(self, app_id: str, n: int) -> None:
        count = self._counts.get(app_id)
        if count is not None:
            count.used += n

    def used(self, app_id: str, limits: AppLimits) -> int:
        return self._count(app_id, limits.message_quota_period).used

    async def tunnels_open(self, app_id: str) -> int:
        return self.count_tunnels(app_id)

    def _message_ratios(self) -> dict[tuple[str, str], float]:
        now = self.clock()
        return {
            (app_id, "messages"): count.used / count.quota
            for app_id, count in self._counts.items()
            if count.quota and count.period.contains(now)
        }

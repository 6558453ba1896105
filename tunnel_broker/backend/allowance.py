"""A message quota shared by pods, without a round trip to Redis per message.

Each pod *reserves allowance* from the app's ledger for the period (a Redis hash,
``scripts.RESERVE``) and admits messages out of it locally; a message costs a
subtraction. The ledger only ever hands out what is left: ``used`` (messages the pods
said they used) plus every pod's reserved allowance never exceeds the quota, so the
quota is never exceeded, whatever the interleaving.

What keeps it from refusing *before* the limit:

- chunks shrink as the quota nears its end: a reservation gets at most an eighth
  (``share``) of what is left, so the last messages are reserved one by one, as they
  come, by the pod they come through;
- a pod gives back allowance it is not using: after ``idle_seconds`` without a message
  it releases what it holds, and every ``report_seconds`` it reports what it used;
- a pod that finds nothing left while other pods still hold allowance waits for them to
  use or return it (a reader holds its socket meanwhile, an API call waits), up to
  ``hold_seconds``: it is refused only once all of the quota is used.

A reservation lapses ``hold_seconds`` after the pod's last call (Redis time): the pod
stops using it sooner (its own clock, with a margin), and another pod's call counts a
lapsed reservation as used (a pod killed while holding some: what it used of it is
unknown, and the quota must not be exceeded). Pods report their *cumulative* use in the
period, so a call retried after a lost answer counts nothing twice.

``settle`` is the ledger's arithmetic in Python, the reference the Lua script follows
(tests run both on the same calls). The cost of a message and of a reservation is in
docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tunnel_broker.backend.redis.health import raise_if_cancelled
from tunnel_broker.errors import BackendUnavailable
from tunnel_broker.usage.periods import Period, period_of

logger = logging.getLogger("tunnel_broker.backend.allowance")

HOLD_SECONDS = 5.0  # a reservation lapses this long after the pod's last call
IDLE_SECONDS = 0.5  # allowance unused this long goes back
REPORT_SECONDS = 0.25  # use is reported at least this often (the warning header's lag)
SHARE = 8  # a reservation takes at most this fraction of what is left
FIRST_CHUNK = 16
MAX_CHUNK = 10_000
WAIT_STEP = 0.05  # between looks at allowance other pods may give back
LOCAL_MARGIN = 0.8  # the pod stops using a reservation after this share of its life


@dataclass(frozen=True, slots=True)
class Ask:
    """One call of a pod to the ledger: it reports, then reserves or releases."""

    pod: str
    total: int  # messages this pod used in the period so far (cumulative)
    held: int  # allowance it still holds and may use (0 after it gave it up)
    need: int  # more it must have now, all or nothing (0: none)
    want: int  # more it would take (a chunk)
    release: bool  # give back everything it holds (``held`` is 0)
    quota: int
    hold_ms: int = int(HOLD_SECONDS * 1000)
    share: int = SHARE


@dataclass(frozen=True, slots=True)
class Answer:
    granted: int
    used: int  # the period's messages reported used, all pods together
    others: int  # allowance other pods hold
    free: int  # allowance nobody holds, after this grant


class Ledger(Protocol):
    """Where an app's quota of a period is kept (``backend/redis/quotas.py``)."""

    async def settle(self, app_id: str, period: Period, ask: Ask) -> Answer: ...


def settle(fields: dict[str, int], ask: Ask, now_ms: int) -> Answer:
    """The ledger's arithmetic on the hash's ``fields`` (changed in place), as
    ``scripts.RESERVE`` does it."""
    pod = ask.pod
    used = fields.get("used", 0)
    reported = fields.get("c:" + pod, 0)
    # A reservation that lapsed was counted whole: what the pod used of it is in already.
    if fields.pop("r:" + pod, None) is None and ask.total > reported:
        used += ask.total - reported
    if ask.total > reported:
        fields["c:" + pod] = ask.total
    others = 0
    for name in [f for f in fields if f.startswith("e:") and f != "e:" + pod]:
        other = name[2:]
        held = fields.get("h:" + other, 0)
        if fields[name] <= now_ms:
            used += held
            del fields[name]
            fields.pop("h:" + other, None)
            fields["r:" + other] = 1
        else:
            others += held
    granted = 0
    free = ask.quota - used - others - ask.held
    if ask.release:
        fields.pop("h:" + pod, None)
        fields.pop("e:" + pod, None)
    else:
        if free >= max(ask.need, 1):
            granted = min(free, max(ask.need, min(ask.want, free // ask.share)))
        fields["h:" + pod] = ask.held + granted
        fields["e:" + pod] = now_ms + ask.hold_ms
    fields["used"] = used
    return Answer(granted, used, others, free - granted)


class _State:
    """This pod's allowance of one app in one period."""

    __slots__ = (
        "allowance",
        "call",
        "deadline",
        "free",
        "granted_at",
        "last_use",
        "others",
        "period",
        "quota",
        "reported",
        "settled",
        "total",
        "used",
        "want",
    )

    def __init__(self, period: Period, quota: int) -> None:
        self.period = period
        self.quota = quota  # the app's, as last checked
        self.allowance = 0  # reserved, not used yet
        self.total = 0  # used in the period (cumulative, as reported)
        self.reported = 0  # ``total`` as the ledger last heard it
        self.deadline = 0.0  # monotonic: the allowance is not used after this
        self.used = 0  # the period's use, all pods, as the ledger last said
        self.others = 0  # allowance other pods held at the last call
        self.free = 0  # allowance nobody held after the last call
        # No other pod held any at the last call, so ``free`` can only have shrunk since
        # (until this pod gives some back or the quota changes): a refusal is final.
        self.settled = False
        self.want = FIRST_CHUNK
        self.granted_at = 0.0
        self.last_use = 0.0
        self.call: asyncio.Task[None] | None = None


class Allowances:
    """This pod's side of every app's message quota (Redis mode)."""

    def __init__(
        self,
        ledger: Ledger,
        pod: str,
        clock: Callable[[], float] = time.time,
        hold_seconds: float = HOLD_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        report_seconds: float = REPORT_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.pod = pod
        self.clock = clock
        self.hold_seconds = hold_seconds
        self.idle_seconds = idle_seconds
        self.report_seconds = report_seconds
        self._states: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- the hot path --------------------------------------------------------------

    def state(self, app_id: str, kind: str, quota: int) -> _State:
        """The app's state in the current period (a new one once the period ended),
        with the app's quota as it is now."""
        state = self._states.get(app_id)
        if state is None or self.clock() >= state.period.end or state.period.kind != kind:
            if state is not None:
                self._leave(app_id, state)
            state = self._states[app_id] = _State(period_of(kind, self.clock()), quota)
        elif state.quota != quota:  # changed at run time
            if quota < state.quota:
                state.allowance = 0  # reserved under the old quota: given back, asked anew
            state.quota = quota
            state.settled = False
        return state

    def check(self, app_id: str, kind: str, quota: int, n: int) -> bool | asyncio.Task[None]:
        """Whether ``n`` messages may go now (then ``take`` them, without awaiting
        anything in between): True, False (the quota is used up, for good this
        period), or a reservation to wait for before asking again."""
        state = self.state(app_id, kind, quota)
        valid = time.monotonic() < state.deadline
        if state.allowance >= n and valid:
            return True
        have = state.allowance if valid else 0
        if state.settled and have + state.free < n:
            return False
        if state.call is None:
            state.call = asyncio.get_running_loop().create_task(
                self._reserve(app_id, state, n - have)
            )
            state.call.add_done_callback(_retrieve)
        return state.call

    def take(self, app_id: str, n: int) -> None:
        """Use ``n`` of the allowance ``check`` found."""
        state = self._states[app_id]
        state.allowance -= n
        state.total += n
        state.last_use = time.monotonic()
        if (
            state.allowance <= state.want // 4
            and state.call is None
            and state.free >= SHARE  # else nothing to spare: one by one, as they come
        ):
            # Running low: the next chunk, before a message has to wait for it.
            state.call = asyncio.get_running_loop().create_task(self._reserve(app_id, state, 0))
            state.call.add_done_callback(_retrieve)

    def used(self, app_id: str, period: str) -> int:
        """The period's use as far as this pod knows (the ledger's last word plus what
        this pod used since): lags other pods' by up to ``report_seconds``."""
        state = self._states.get(app_id)
        if state is None or state.period.name != period:
            return 0
        return state.used + state.total - state.reported

    def usage(self) -> list[tuple[str, int, int]]:
        """(app, used, quota) of every app with a quota in its current period."""
        now = self.clock()
        return [
            (app_id, state.used + state.total - state.reported, state.quota)
            for app_id, state in self._states.items()
            if state.quota and state.period.contains(now)
        ]

    def learn(self, app_id: str, period: Period, used: int) -> None:
        """The ledger's ``used`` as read by someone else (the warning header's view)."""
        state = self._states.get(app_id)
        if state is not None and state.period == period and used > state.used:
            state.used = used

    # ---- calls to the ledger -------------------------------------------------------

    async def _reserve(self, app_id: str, state: _State, need: int) -> None:
        """Reserve at least ``need`` (0: a chunk if there is one to spare), waiting
        while other pods hold what is missing; ``state.call`` until done."""
        try:
            # Chunks follow the pace: doubled while each lasts under half a second.
            lasted = time.monotonic() - state.granted_at
            if lasted < 0.5:
                state.want = min(MAX_CHUNK, state.want * 2)
            elif lasted > 2.0:
                state.want = max(1, state.want // 2)
            patience = time.monotonic() + self.hold_seconds + 1.0
            while True:
                raise_if_cancelled()  # one a Redis call swallowed (health.py)
                answer = await self._call(app_id, state, need, state.want)
                if answer.granted >= need or not need or answer.others == 0:
                    return
                if time.monotonic() > patience:
                    return
                await asyncio.sleep(WAIT_STEP)  # until the others use or return theirs
        finally:
            state.call = None

    async def _call(
        self, app_id: str, state: _State, need: int, want: int, release: bool = False
    ) -> Answer:
        sent_at = time.monotonic()
        if sent_at >= state.deadline or release:
            state.allowance = 0  # not to be used from now on, whatever the answer
        total = state.total
        ask = Ask(self.pod, total, state.allowance, need, want, release, state.quota)
        answer = await self.ledger.settle(app_id, state.period, ask)
        state.reported = max(state.reported, total)
        state.used, state.others = answer.used, answer.others
        state.free = max(0, answer.free)
        state.settled = answer.others == 0 and not release
        if not release:
            state.allowance += answer.granted
            state.deadline = sent_at + self.hold_seconds * LOCAL_MARGIN
            if answer.granted:
                state.granted_at = sent_at
        return answer

    def _leave(self, app_id: str, state: _State) -> None:
        """The period ended (or its kind changed): say what was used, give back the
        rest, in the background; the new period starts afresh."""
        if state.total > state.reported or state.allowance:
            task = asyncio.get_running_loop().create_task(
                self._call(app_id, state, 0, 0, release=True)
            )
            task.add_done_callback(_retrieve)

    # ---- upkeep ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._upkeep(), name="quotas")

    async def stop(self) -> None:
        """Report what was used and give back what is held (a pod leaving)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for app_id, state in list(self._states.items()):
            if state.total > state.reported or state.allowance:
                with contextlib.suppress(BackendUnavailable):
                    await self._call(app_id, state, 0, 0, release=True)

    async def _upkeep(self) -> None:
        while True:
            raise_if_cancelled()  # one a Redis call swallowed (health.py)
            await asyncio.sleep(self.report_seconds)
            try:
                self._tend_all()
            except Exception:
                logger.exception("quota upkeep failed; retrying")

    def _tend_all(self) -> None:
        """Report use, give back what lies idle, renew what is in use; forget ended
        periods."""
        for app_id, state in list(self._states.items()):
            if state.call is not None:
                continue
            if self.clock() >= state.period.end:
                del self._states[app_id]
                self._leave(app_id, state)
                continue
            now = time.monotonic()
            idle = state.allowance and now - state.last_use >= self.idle_seconds
            renew = state.allowance and state.deadline - now < self.hold_seconds / 2
            if idle or renew or state.total > state.reported:
                state.call = asyncio.get_running_loop().create_task(
                    self._tend(app_id, state, bool(idle))
                )
                state.call.add_done_callback(_retrieve)

    async def _tend(self, app_id: str, state: _State, release: bool) -> None:
        try:
            await self._call(app_id, state, 0, 0, release=release)
        except BackendUnavailable:
            pass  # reported at the next call: use is cumulative
        finally:
            state.call = None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A reservation's failure is its waiters' to see; none may be left unretrieved."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, BackendUnavailable):
        logger.debug("quota reservation failed: %s", error)
    elif error is not None:
        logger.error("quota reservation failed", exc_info=error)

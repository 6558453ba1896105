"""Walking a cursor-paginated listing, as a small state machine both clients drive.

The clients differ only in whether they ``await`` each page; the cursor bookkeeping, and the
guard against a broker that hands back the same cursor forever, live here once.
"""

from __future__ import annotations

from collections.abc import Callable

from business_sdk._api import Call
from business_sdk._exceptions import UnexpectedResponseError
from business_sdk._models import TunnelInfo, TunnelPage

PageCall = Callable[[str | None], Call[TunnelPage]]


class Pager:
    """Drive it as ``while not pager.done: yield from pager.accept(execute(pager.next_call()))``."""

    __slots__ = ("_cursor", "_make_call", "_seen", "done")

    def __init__(self, make_call: PageCall) -> None:
        self._make_call = make_call
        self._cursor: str | None = None
        self._seen: set[str] = set()
        self.done = False

    def next_call(self) -> Call[TunnelPage]:
        return self._make_call(self._cursor)

    def accept(self, page: TunnelPage) -> list[TunnelInfo]:
        """Record the page's cursor and return its tunnels."""
        cursor = page.next_cursor
        if cursor is None:
            self.done = True
        elif cursor in self._seen:
            # A repeated cursor would make the iterator loop forever.
            raise UnexpectedResponseError(f"the broker returned cursor {cursor!r} twice")
        else:
            self._seen.add(cursor)
        self._cursor = cursor
        return page.tunnels

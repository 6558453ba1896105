"""Who a message is for: some tunnels, some users, some groups, or every tunnel of the app.

A ``Target`` is built with one of the class methods, so the four wire shapes
(``{"tunnels": [..]}``, ``{"users": [..]}``, ``{"groups": [..]}``, ``{"all": true}``) are spelled
in one place and a typo cannot produce a target the broker rejects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

TargetKind = Literal["tunnels", "users", "groups", "all"]


def _flatten(ids: tuple[str | Iterable[str], ...]) -> tuple[str, ...]:
    """Accept ``f("a", "b")`` and ``f(["a", "b"])`` alike; a ``str`` is one id, not letters."""
    out: list[str] = []
    for item in ids:
        if isinstance(item, str):
            out.append(item)
        else:
            out.extend(item)
    if not out:
        raise ValueError("a target needs at least one id")
    for value in out:
        if not isinstance(value, str) or not value:
            raise ValueError(f"target ids must be non-empty strings, got {value!r}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes. Use ``Target.tunnels(...)``, ``.users(...)``, ``.groups(...)``
    or ``.all()`` rather than the constructor."""

    kind: TargetKind
    ids: tuple[str, ...] = ()

    @classmethod
    def tunnels(cls, *ids: str | Iterable[str]) -> Target:
        """These tunnels; ids that are not open come back in ``SendResult.not_connected``."""
        return cls("tunnels", _flatten(ids))

    @classmethod
    def users(cls, *user_ids: str | Iterable[str]) -> Target:
        """Every open tunnel of these users (all their devices), wherever they are connected."""
        return cls("users", _flatten(user_ids))

    @classmethod
    def groups(cls, *groups: str | Iterable[str]) -> Target:
        """Every tunnel that is a member of any of these groups."""
        return cls("groups", _flatten(groups))

    @classmethod
    def all(cls) -> Target:
        """Every open tunnel of the app."""
        return cls("all")

    def to_json(self) -> dict[str, Any]:
        """The wire form used in ``POST /v1/messages`` and in webhook ``send`` actions."""
        if self.kind == "all":
            return {"all": True}
        return {self.kind: list(self.ids)}

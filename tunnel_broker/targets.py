"""Who a message or close is for: tunnels, users, groups or everyone of an app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TargetKind = Literal["tunnels", "users", "groups", "all"]


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    ids: tuple[str, ...] = ()

    @classmethod
    def tunnel(cls, tunnel_id: str) -> Target:
        return cls("tunnels", (tunnel_id,))

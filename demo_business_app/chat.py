"""Chat rules: which rooms exist, how they map to broker groups, and who is in a room.

Rooms are broker groups, so "send to a room" is one push to ``Target.groups(...)`` and
"who is in this room" is the broker's presence listing of that group; the demo server
keeps no list of sockets. It does remember which rooms each open tunnel joined
(``Memberships``), because a ``tunnel.closed`` event comes after the broker has already
dropped the tunnel from its groups and the leave notices need to know where to go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from demo_business_app.protocol import ProtocolError, nick_of

ROOMS: tuple[str, ...] = ("lobby", "tech", "games")
DEFAULT_ROOM = "lobby"
MAX_TEXT = 500
BOARD_GROUP = "board"


def room_group(room: str) -> str:
    """The broker group of a chat room (prefixed so rooms never clash with other groups)."""
    return f"room:{room}"


def check_room(value: Any) -> str:
    """The room named by a client, which must be one of ``ROOMS``."""
    if not isinstance(value, str) or value not in ROOMS:
        raise ProtocolError(f"room must be one of {', '.join(ROOMS)}")
    return value


@dataclass(frozen=True, slots=True)
class Member:
    """A user shown in a room's online list."""

    openid: str
    nick: str

    def to_json(self) -> dict[str, str]:
        return {"openid": self.openid, "nick": self.nick}


def online_members(
    tunnels: Iterable[tuple[str, str, Mapping[str, Any]]],
    *,
    include: Member | None = None,
    exclude_tunnel: str | None = None,
) -> list[Member]:
    """Who is online from presence rows ``(tunnel_id, user_id, identity)``: one entry per
    user (a user may have several tabs), sorted by name.

    ``include``/``exclude_tunnel`` correct for the change the current webhook answer is
    about to make: a tunnel joining through an action is not in the group yet, and one
    that is leaving still is.
    """
    members: dict[str, Member] = {}
    for tunnel_id, user_id, identity in tunnels:
        if tunnel_id != exclude_tunnel:
            members.setdefault(user_id, Member(user_id, nick_of(identity, user_id)))
    if include is not None:
        members.setdefault(include.openid, include)
    return sorted(members.values(), key=lambda m: (m.nick.casefold(), m.openid))


@dataclass
class Memberships:
    """The rooms each open tunnel is in, as far as this server made it join them."""

    rooms: dict[str, set[str]] = field(default_factory=dict)

    def connected(self, tunnel_id: str) -> None:
        """A tunnel connected: its token joined it to the default room."""
        self.rooms[tunnel_id] = {DEFAULT_ROOM}

    def join(self, tunnel_id: str, room: str) -> bool:
        """Record a join; ``False`` if the tunnel was already in the room."""
        joined = self.rooms.setdefault(tunnel_id, set())
        if room in joined:
            return False
        joined.add(room)
        return True

    def leave(self, tunnel_id: str, room: str) -> bool:
        """Record a leave; ``False`` if the tunnel was not in the room."""
        joined = self.rooms.get(tunnel_id, set())
        if room not in joined:
            return False
        joined.discard(room)
        return True

    def closed(self, tunnel_id: str) -> list[str]:
        """Forget a closed tunnel; returns the rooms it was in, in ``ROOMS`` order."""
        joined = self.rooms.pop(tunnel_id, set())
        return [room for room in ROOMS if room in joined]

    def of(self, tunnel_id: str) -> list[str]:
        joined = self.rooms.get(tunnel_id, set())
        return [room for room in ROOMS if room in joined]

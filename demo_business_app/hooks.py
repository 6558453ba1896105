"""Tunnel events → demo features. Each client frame is one JSON message (see ``protocol``);
the answers go back as webhook actions when they concern this moment (a chat line, a join),
and through the SDK client when they happen later (game timers, in ``arena``).

Who sent a frame is ``event.user_id``/``event.identity``: the broker signed them into the
connect URL after verifying the WeChat session, so nothing here trusts the client's word.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from business_sdk import (
    Actions,
    Target,
    TunnelBroker,
    TunnelClosed,
    TunnelConnected,
    TunnelEvent,
    TunnelMessage,
    WebhookHandler,
)
from demo_business_app.arena import Arena
from demo_business_app.board import StrokeStore, check_stroke
from demo_business_app.chat import (
    BOARD_GROUP,
    DEFAULT_ROOM,
    MAX_TEXT,
    ROOMS,
    Member,
    Memberships,
    check_room,
    online_members,
    room_group,
)
from demo_business_app.protocol import ProtocolError, decode, encode, nick_of, text_field
from demo_business_app.rps import MOVES, Player

Handler = Callable[[TunnelMessage, dict[str, Any], Actions], Awaitable[None]]


def member_of(event: TunnelEvent) -> Member:
    return Member(event.user_id, nick_of(event.identity, event.user_id))


class DemoHooks:
    """The webhook handlers of the demo, bound to its broker client, board and arena."""

    def __init__(
        self,
        broker: TunnelBroker,
        store: StrokeStore,
        arena: Arena,
        secrets: list[str],
    ) -> None:
        self.broker = broker
        self.store = store
        self.arena = arena
        self.memberships = Memberships()
        self.handler = WebhookHandler(secrets=secrets)
        self.handler.on_connected(self.on_connected)
        self.handler.on_message(self.on_message)
        self.handler.on_closed(self.on_closed)
        self._routes: dict[str, Handler] = {
            "join": self._join,
            "leave": self._leave,
            "chat": self._chat,
            "dm": self._dm,
            "who": self._who,
            "rps.find": self._rps_find,
            "rps.move": self._rps_move,
            "rps.quit": self._rps_quit,
            "board.load": self._board_load,
            "board.stroke": self._board_stroke,
            "board.clear": self._board_clear,
        }

    # ------------------------------------------------------------------ lifecycle events

    async def on_connected(self, event: TunnelConnected, actions: Actions) -> None:
        """Greet the tunnel, show the lobby and the board; its token already joined the
        lobby and board groups, so group pushes reach it."""
        me = member_of(event)
        self.memberships.connected(event.tunnel_id)
        actions.reply(
            encode(
                "welcome",
                you=me.to_json(),
                tunnel_id=event.tunnel_id,
                rooms=list(ROOMS),
                joined=[DEFAULT_ROOM],
                moves=list(MOVES),
            )
        )
        await self._announce(actions, DEFAULT_ROOM, me, event.tunnel_id, joining=True)
        actions.reply(self._board_snapshot())

    async def on_message(self, event: TunnelMessage, actions: Actions) -> None:
        try:
            message = decode(event.text)
            route = self._routes.get(message["type"])
            if route is None:
                raise ProtocolError(f"unknown message type {message['type']!r}")
            await route(event, message, actions)
        except ProtocolError as exc:
            actions.reply(encode("error", text=str(exc)))

    async def on_closed(self, event: TunnelClosed, actions: Actions) -> None:
        """Tell the rooms the user left (unless another tab keeps them there) and forfeit
        their game if this was their last tunnel."""
        me = member_of(event)
        for room in self.memberships.closed(event.tunnel_id):
            await self._announce(actions, room, me, event.tunnel_id, joining=False)
        still_here = [t async for t in self.broker.user_tunnels(event.user_id)]
        if not still_here:
            await self.arena.leave(event.user_id)

    # ------------------------------------------------------------------ chat

    async def _presence_rows(self, room: str) -> list[tuple[str, str, Mapping[str, Any]]]:
        """The room's open tunnels, from the broker's presence listing of its group."""
        return [
            (t.tunnel_id, t.user_id, t.identity)
            async for t in self.broker.group_tunnels(room_group(room))
        ]

    async def _announce(
        self, actions: Actions, room: str, me: Member, tunnel_id: str, *, joining: bool
    ) -> None:
        """Push the room's online list, and a join/leave notice when the user's presence in
        the room really changed (a second tab joining is no news)."""
        rows = await self._presence_rows(room)
        others = online_members(rows, exclude_tunnel=tunnel_id)
        members = online_members(
            rows, include=me if joining else None, exclude_tunnel=None if joining else tunnel_id
        )
        target = Target.groups(room_group(room))
        if all(m.openid != me.openid for m in others):
            verb = "joined" if joining else "left"
            actions.send(
                target,
                encode("notice", room=room, text=f"{me.nick} {verb} #{room}", at=_now_ms()),
            )
        actions.send(target, encode("presence", room=room, users=[m.to_json() for m in members]))

    async def _join(self, event: TunnelMessage, message: dict[str, Any], actions: Actions) -> None:
        room = check_room(message.get("room"))
        me = member_of(event)
        if self.memberships.join(event.tunnel_id, room):
            actions.join(room_group(room))
            actions.reply(encode("joined", room=room))
            await self._announce(actions, room, me, event.tunnel_id, joining=True)
        else:
            actions.reply(encode("joined", room=room))
            await self._who(event, message, actions)

    async def _leave(self, event: TunnelMessage, message: dict[str, Any], actions: Actions) -> None:
        room = check_room(message.get("room"))
        if not self.memberships.leave(event.tunnel_id, room):
            raise ProtocolError(f"you are not in #{room}")
        await self._announce(actions, room, member_of(event), event.tunnel_id, joining=False)
        actions.leave(room_group(room))
        actions.reply(encode("left", room=room))

    async def _chat(self, event: TunnelMessage, message: dict[str, Any], actions: Actions) -> None:
        room = check_room(message.get("room"))
        if room not in self.memberships.of(event.tunnel_id):
            raise ProtocolError(f"join #{room} before writing there")
        text = text_field(message, "text", max_len=MAX_TEXT)
        frame = encode(
            "chat", room=room, text=text, at=_now_ms(), **{"from": member_of(event).to_json()}
        )
        actions.send(Target.groups(room_group(room)), frame)

    async def _dm(self, event: TunnelMessage, message: dict[str, Any], actions: Actions) -> None:
        """A private message: to every tab of the recipient and of the sender."""
        to = text_field(message, "to", max_len=128)
        text = text_field(message, "text", max_len=MAX_TEXT)
        recipient = [t async for t in self.broker.user_tunnels(to)]
        if not recipient:
            raise ProtocolError("that user is not online")
        me = member_of(event)
        them = Member(to, nick_of(recipient[0].identity, to))
        frame = encode("dm", text=text, at=_now_ms(), to=them.to_json(), **{"from": me.to_json()})
        users = [me.openid] if to == me.openid else [me.openid, to]
        actions.send(Target.users(users), frame)

    async def _who(self, event: TunnelMessage, message: dict[str, Any], actions: Actions) -> None:
        room = check_room(message.get("room"))
        members = online_members(await self._presence_rows(room))
        actions.reply(encode("presence", room=room, users=[m.to_json() for m in members]))

    # ------------------------------------------------------------------ game

    async def _rps_find(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        await self.arena.find(Player(event.user_id, member_of(event).nick))

    async def _rps_move(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        game = text_field(message, "game", max_len=64)
        move = text_field(message, "move", max_len=16)
        await self.arena.move(event.user_id, game, move)

    async def _rps_quit(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        await self.arena.leave(event.user_id)

    # ------------------------------------------------------------------ board

    def _board_snapshot(self) -> str:
        return encode("board.strokes", strokes=[s.to_json() for s in self.store.all()])

    async def _board_load(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        actions.reply(self._board_snapshot())

    async def _board_stroke(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        stroke = check_stroke(message.get("stroke"))
        me = member_of(event)
        saved = self.store.add(me.openid, me.nick, stroke)
        actions.send(Target.groups(BOARD_GROUP), encode("board.stroke", stroke=saved.to_json()))

    async def _board_clear(
        self, event: TunnelMessage, message: dict[str, Any], actions: Actions
    ) -> None:
        removed = self.store.clear_user(event.user_id)
        actions.send(
            Target.groups(BOARD_GROUP),
            encode("board.cleared", openid=event.user_id, removed=removed),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)

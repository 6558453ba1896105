"""Rock-paper-scissors in time: matchmaking with a bot fallback, round timers, pushes.

The rules live in ``rps``; this module owns the clocks. Timers are asyncio tasks in the demo
server, and every message goes out through ``push`` (the SDK's ``send`` to a user), because
a timer fires outside any webhook and so has no webhook answer to ride on. Games live in
this process's memory: a demo server is one process; a real one would keep them in a
shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable

from demo_business_app.protocol import encode
from demo_business_app.rps import (
    BOT_ID,
    MAX_ROUNDS,
    MOVES,
    WINS_NEEDED,
    Game,
    Matchmaker,
    Player,
    bot_move,
)

Push = Callable[[str, str], Awaitable[None]]
"""``push(user_id, frame)``: deliver one JSON frame to every tunnel of a user."""


class Arena:
    """All running games of the demo, and the one player waiting for an opponent."""

    def __init__(
        self,
        push: Push,
        *,
        bot_wait: float = 5.0,
        round_seconds: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self._push = push
        self.bot_wait = bot_wait
        self.round_seconds = round_seconds
        self._rng = rng or random.Random()  # a game bot, not a secret
        counter = itertools.count(1)
        self.matchmaker = Matchmaker(new_id=lambda: f"g{next(counter)}")
        self.games: dict[str, Game] = {}
        self._game_of: dict[str, str] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._bot_timer: asyncio.Task[None] | None = None
        # Every state change and its pushes happen under one lock, so the frames a
        # player receives are always in the order the state changed.
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ entry points

    async def find(self, player: Player) -> None:
        """The player wants a game: pair them, or queue them with a bot as the fallback."""
        async with self._lock:
            if player.id in self._game_of:
                await self._send(player.id, "rps.error", text="you are already in a game")
                return
            game = self.matchmaker.find(player)
            if game is None:
                await self._send(player.id, "rps.waiting", bot_after=self.bot_wait)
                self._cancel_bot_timer()
                self._bot_timer = asyncio.create_task(self._bot_after_wait(player.id))
                return
            self._cancel_bot_timer()
            await self._start(game)

    async def move(self, player_id: str, game_id: str, move: str) -> None:
        """A player chose a move; the round ends as soon as both have."""
        async with self._lock:
            game = self.games.get(game_id)
            if game is None or self._game_of.get(player_id) != game_id:
                await self._send(player_id, "rps.error", text="no such game")
                return
            if move not in MOVES:
                await self._send(player_id, "rps.error", text="unknown move")
                return
            both = game.play(player_id, move)
            opponent = game.opponent(player_id)
            if not both:
                await self._send(opponent.id, "rps.opponent_moved", game=game.id, round=game.round)
                return
            await self._finish_round(game)

    async def leave(self, player_id: str) -> None:
        """The player left (tunnel closed, or quit): unqueue them or forfeit their game."""
        async with self._lock:
            if self.matchmaker.cancel(player_id):
                self._cancel_bot_timer()
            game_id = self._game_of.get(player_id)
            if game_id is None:
                return
            game = self.games[game_id]
            winner = game.opponent(player_id)
            await self._end(game, winner=winner, reason="forfeit")

    async def aclose(self) -> None:
        """Stop every timer (server shutdown)."""
        self._cancel_bot_timer()
        for task in list(self._timers.values()):
            task.cancel()
        for task in list(self._timers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._timers.clear()

    # ------------------------------------------------------------------ internals

    async def _send(self, user_id: str, kind: str, **fields: object) -> None:
        if user_id != BOT_ID:
            await self._push(user_id, encode(kind, **fields))

    def _cancel_bot_timer(self) -> None:
        if self._bot_timer is not None and self._bot_timer is not asyncio.current_task():
            self._bot_timer.cancel()
        self._bot_timer = None

    async def _bot_after_wait(self, player_id: str) -> None:
        await asyncio.sleep(self.bot_wait)
        async with self._lock:
            game = self.matchmaker.against_bot(player_id)
            if game is not None:
                self._bot_timer = None
                await self._start(game)

    async def _start(self, game: Game) -> None:
        self.games[game.id] = game
        for seat, player in enumerate(game.players):
            self._game_of[player.id] = game.id
            await self._send(
                player.id,
                "rps.start",
                game=game.id,
                you=player.to_json(),
                opponent=game.players[1 - seat].to_json(),
                wins_needed=WINS_NEEDED,
                max_rounds=MAX_ROUNDS,
            )
        await self._start_round(game)

    async def _start_round(self, game: Game) -> None:
        for player in game.players:
            if player.bot:
                game.play(player.id, bot_move(self._rng))
            await self._send(
                player.id, "rps.round", game=game.id, round=game.round, seconds=self.round_seconds
            )
        self._timers[game.id] = asyncio.create_task(self._round_timer(game.id, game.round))

    async def _round_timer(self, game_id: str, round_no: int) -> None:
        await asyncio.sleep(self.round_seconds)
        async with self._lock:
            game = self.games.get(game_id)
            if game is not None and game.round == round_no:
                self._timers.pop(game_id, None)
                await self._finish_round(game, timed_out=True)

    async def _finish_round(self, game: Game, *, timed_out: bool = False) -> None:
        timer = self._timers.pop(game.id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        result = game.finish_round()
        for seat, player in enumerate(game.players):
            await self._send(
                player.id,
                "rps.result",
                game=game.id,
                round=result.round,
                you=result.moves[seat],
                opponent=result.moves[1 - seat],
                winner=None if result.winner is None else result.winner.id,
                score={"you": result.score[seat], "opponent": result.score[1 - seat]},
                timed_out=timed_out,
            )
        if game.over:
            reason = "score" if max(game.score) >= WINS_NEEDED else "rounds"
            await self._end(game, winner=game.winner, reason=reason)
        else:
            await self._start_round(game)

    async def _end(self, game: Game, *, winner: Player | None, reason: str) -> None:
        timer = self._timers.pop(game.id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        self.games.pop(game.id, None)
        for seat, player in enumerate(game.players):
            self._game_of.pop(player.id, None)
            await self._send(
                player.id,
                "rps.over",
                game=game.id,
                winner=None if winner is None else winner.id,
                you_won=winner is not None and winner.id == player.id,
                score={"you": game.score[seat], "opponent": game.score[1 - seat]},
                reason=reason,
            )

"""Rock-paper-scissors rules: moves, rounds, scores and matchmaking, with no clock and no
I/O, so every rule is tested directly. ``arena`` adds the timers and the pushes.

A game is first to ``WINS_NEEDED`` round wins, or ends after ``MAX_ROUNDS`` rounds (a
long run of draws must not keep two players stuck). A player who has not moved when the
round timer ends loses that round; if neither moved, the round is a draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

MOVES: tuple[str, ...] = ("rock", "paper", "scissors")
BEATS: dict[str, str] = {"rock": "scissors", "paper": "rock", "scissors": "paper"}
WINS_NEEDED = 2
MAX_ROUNDS = 5
BOT_ID = "bot"


@dataclass(frozen=True, slots=True)
class Player:
    """A player as the game sees them: the user id to push to, the name to show."""

    id: str
    nick: str
    bot: bool = False

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "nick": self.nick, "bot": self.bot}


BOT = Player(BOT_ID, "RPS Bot", bot=True)


def is_move(value: object) -> bool:
    return isinstance(value, str) and value in MOVES


def round_winner(a: str | None, b: str | None) -> int | None:
    """Index (0 or 1) of the player who won a round, ``None`` for a draw. ``None`` as a
    move means "did not move in time", which loses to any move."""
    if a == b:
        return None
    if a is None:
        return 1
    if b is None:
        return 0
    return 0 if BEATS[a] == b else 1


def bot_move(rng: random.Random) -> str:
    """The bot plays uniformly at random: unbeatable in expectation, easy to lose to."""
    return rng.choice(MOVES)


@dataclass(frozen=True, slots=True)
class RoundResult:
    round: int
    moves: tuple[str | None, str | None]
    winner: Player | None
    score: tuple[int, int]


@dataclass
class Game:
    """One game between two players; ``players[1]`` may be the bot."""

    id: str
    players: tuple[Player, Player]
    round: int = 1
    score: list[int] = field(default_factory=lambda: [0, 0])
    moves: list[str | None] = field(default_factory=lambda: [None, None])

    def seat(self, player_id: str) -> int:
        """0 or 1 for a player of this game; ``KeyError`` for anyone else."""
        for index, player in enumerate(self.players):
            if player.id == player_id:
                return index
        raise KeyError(player_id)

    def opponent(self, player_id: str) -> Player:
        return self.players[1 - self.seat(player_id)]

    def play(self, player_id: str, move: str) -> bool:
        """Record a move (the first one of the round counts); ``True`` once both moved."""
        if not is_move(move):
            raise ValueError(f"move must be one of {', '.join(MOVES)}")
        seat = self.seat(player_id)
        if self.moves[seat] is None:
            self.moves[seat] = move
        return all(m is not None for m in self.moves)

    def finish_round(self) -> RoundResult:
        """Score the round as it stands (missing moves lose) and start the next one."""
        a, b = self.moves
        winner_seat = round_winner(a, b)
        if winner_seat is not None:
            self.score[winner_seat] += 1
        result = RoundResult(
            round=self.round,
            moves=(a, b),
            winner=None if winner_seat is None else self.players[winner_seat],
            score=(self.score[0], self.score[1]),
        )
        self.round += 1
        self.moves = [None, None]
        return result

    @property
    def over(self) -> bool:
        return max(self.score) >= WINS_NEEDED or self.round > MAX_ROUNDS

    @property
    def winner(self) -> Player | None:
        """The player ahead when the game is over (``None`` for a tie)."""
        if self.score[0] == self.score[1]:
            return None
        return self.players[0] if self.score[0] > self.score[1] else self.players[1]


@dataclass
class Matchmaker:
    """Pairs players in arrival order; at most one player waits at a time."""

    new_id: Callable[[], str]
    waiting: Player | None = None

    def find(self, player: Player) -> Game | None:
        """Queue ``player``, or pair them with the one waiting (never with themselves)."""
        if self.waiting is None or self.waiting.id == player.id:
            self.waiting = player
            return None
        opponent, self.waiting = self.waiting, None
        return Game(self.new_id(), (opponent, player))

    def cancel(self, player_id: str) -> bool:
        """Take a player out of the queue (they left); ``True`` if they were waiting."""
        if self.waiting is not None and self.waiting.id == player_id:
            self.waiting = None
            return True
        return False

    def against_bot(self, player_id: str) -> Game | None:
        """Nobody came: pair the waiting player with the bot, if they still wait."""
        if self.waiting is None or self.waiting.id != player_id:
            return None
        player, self.waiting = self.waiting, None
        return Game(self.new_id(), (player, BOT))

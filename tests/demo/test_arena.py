"""Games in time: matchmaking, the bot fallback, round timers and forfeits, with the pushes
captured instead of sent to a broker."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from demo_business_app.arena import Arena
from demo_business_app.rps import Player
from tests.support.waiting import check_for

ANN = Player("o-ann", "Ann")
BOB = Player("o-bob", "Bob")


class Pushes:
    def __init__(self) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, user_id: str, frame: str) -> None:
        self.frames.append((user_id, json.loads(frame)))

    def of(self, user_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for u, f in self.frames if u == user_id and kind in (None, f["type"])]


@pytest.fixture
async def pushes() -> Pushes:
    return Pushes()


@pytest.fixture
async def arena(pushes: Pushes) -> AsyncIterator[Arena]:
    arena = Arena(pushes, bot_wait=0.2, round_seconds=0.3, rng=random.Random(1))
    yield arena
    await arena.aclose()


async def test_two_players_play_a_full_game(arena: Arena, pushes: Pushes) -> None:
    await arena.find(ANN)
    assert pushes.of(ANN.id)[-1]["type"] == "rps.waiting"
    await arena.find(BOB)
    start = pushes.of(BOB.id, "rps.start")[0]
    assert start["opponent"] == ANN.to_json()
    game = start["game"]
    for round_no in (1, 2):
        await arena.move(ANN.id, game, "paper")
        assert pushes.of(BOB.id, "rps.opponent_moved")[-1]["round"] == round_no
        await arena.move(BOB.id, game, "rock")
    results = pushes.of(ANN.id, "rps.result")
    assert [r["score"] for r in results] == [
        {"you": 1, "opponent": 0},
        {"you": 2, "opponent": 0},
    ]
    assert pushes.of(BOB.id, "rps.result")[-1]["score"] == {"you": 0, "opponent": 2}
    over_ann = pushes.of(ANN.id, "rps.over")[0]
    over_bob = pushes.of(BOB.id, "rps.over")[0]
    assert over_ann["you_won"] and not over_bob["you_won"] and over_ann["reason"] == "score"
    assert arena.games == {}


async def test_a_lonely_player_gets_the_bot_and_slow_rounds_time_out(
    arena: Arena, pushes: Pushes
) -> None:
    await arena.find(ANN)
    start = await check_for(2, lambda: pushes.of(ANN.id, "rps.start"), what="bot game")
    assert start[0]["opponent"]["bot"] is True
    # Ann never moves: every round times out and the bot (who always moves) wins.
    over = await check_for(5, lambda: pushes.of(ANN.id, "rps.over"), what="game over")
    assert over[0]["winner"] == "bot" and over[0]["score"] == {"you": 0, "opponent": 2}
    assert all(r["timed_out"] for r in pushes.of(ANN.id, "rps.result"))
    assert not [u for u, _ in pushes.frames if u == "bot"]  # nothing is pushed to the bot


async def test_leaving_forfeits_or_unqueues(arena: Arena, pushes: Pushes) -> None:
    await arena.find(ANN)
    await arena.leave(ANN.id)
    await arena.find(BOB)
    assert not pushes.of(BOB.id, "rps.start")  # Ann left the queue: Bob waits
    await arena.find(ANN)
    game = pushes.of(ANN.id, "rps.start")[0]["game"]
    await arena.leave(BOB.id)
    over = pushes.of(ANN.id, "rps.over")[0]
    assert over["you_won"] and over["reason"] == "forfeit"
    await arena.move(ANN.id, game, "rock")
    assert pushes.of(ANN.id, "rps.error")[-1]["text"] == "no such game"


async def test_players_cannot_join_twice_or_play_nonsense(arena: Arena, pushes: Pushes) -> None:
    await arena.find(ANN)
    await arena.find(BOB)
    await arena.find(ANN)
    assert pushes.of(ANN.id, "rps.error")[-1]["text"] == "you are already in a game"
    game = pushes.of(ANN.id, "rps.start")[0]["game"]
    await arena.move(ANN.id, game, "lizard")
    assert pushes.of(ANN.id, "rps.error")[-1]["text"] == "unknown move"

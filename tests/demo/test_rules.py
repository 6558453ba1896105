"""The demo's rules without any server: game, chat presence, board validation and storage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from demo_business_app.board import MAX_POINTS, StrokeStore, check_stroke
from demo_business_app.chat import DEFAULT_ROOM, Member, Memberships, check_room, online_members
from demo_business_app.protocol import ProtocolError, decode, encode, nick_of, text_field
from demo_business_app.rps import (
    BOT,
    MAX_ROUNDS,
    MOVES,
    Game,
    Matchmaker,
    Player,
    bot_move,
    round_winner,
)

ANN = Player("o-ann", "Ann")
BOB = Player("o-bob", "Bob")


@pytest.mark.parametrize(
    ("a", "b", "winner"),
    [
        ("rock", "scissors", 0),
        ("scissors", "paper", 0),
        ("paper", "rock", 0),
        ("scissors", "rock", 1),
        ("rock", "rock", None),
        (None, "rock", 1),
        ("paper", None, 0),
        (None, None, None),
    ],
)
def test_round_winner(a: str | None, b: str | None, winner: int | None) -> None:
    assert round_winner(a, b) == winner


def test_first_to_two_wins_the_game() -> None:
    game = Game("g1", (ANN, BOB))
    assert not game.play(ANN.id, "rock")
    assert not game.play(ANN.id, "paper")  # a second move in the round is ignored
    assert game.play(BOB.id, "scissors")
    first = game.finish_round()
    assert first.winner == ANN and first.moves == ("rock", "scissors") and first.score == (1, 0)
    assert (game.over, game.round, game.moves) == (False, 2, [None, None])
    game.play(ANN.id, "rock")
    game.play(BOB.id, "scissors")
    game.finish_round()
    assert game.over and game.winner == ANN


def test_a_missing_move_loses_the_round_and_draws_end_after_max_rounds() -> None:
    game = Game("g1", (ANN, BOB))
    game.play(BOB.id, "paper")
    assert game.finish_round().winner == BOB
    tie = Game("g2", (ANN, BOB))
    for _ in range(MAX_ROUNDS):
        assert not tie.over
        tie.finish_round()  # nobody moves: draws
    assert tie.over and tie.winner is None


def test_game_refuses_strangers_and_unknown_moves() -> None:
    game = Game("g1", (ANN, BOB))
    with pytest.raises(KeyError):
        game.play("o-eve", "rock")
    with pytest.raises(ValueError):
        game.play(ANN.id, "lizard")
    assert game.opponent(ANN.id) == BOB


def test_matchmaker_pairs_in_order_and_falls_back_to_the_bot() -> None:
    ids = iter(["g1", "g2"])
    maker = Matchmaker(new_id=lambda: next(ids))
    assert maker.find(ANN) is None
    assert maker.find(ANN) is None  # clicking twice does not pair you with yourself
    game = maker.find(BOB)
    assert game is not None and game.players == (ANN, BOB) and maker.waiting is None
    assert maker.find(ANN) is None
    assert maker.against_bot(BOB.id) is None  # Bob is not the one waiting
    bot_game = maker.against_bot(ANN.id)
    assert bot_game is not None and bot_game.players == (ANN, BOT) and bot_game.id == "g2"
    assert maker.against_bot(ANN.id) is None
    assert maker.find(BOB) is None and maker.cancel(BOB.id) and not maker.cancel(BOB.id)


def test_bot_moves_are_moves() -> None:
    rng = random.Random(7)
    assert {bot_move(rng) for _ in range(100)} == set(MOVES)


def test_online_members_dedupes_users_and_corrects_for_pending_changes() -> None:
    rows = [
        ("t1", "o-bob", {"nickName": "bob"}),
        ("t2", "o-ann", {"nickName": "Ann"}),
        ("t3", "o-ann", {"nickName": "Ann"}),
        ("t4", "o-x", {}),
    ]
    assert [m.nick for m in online_members(rows)] == ["Ann", "bob", "o-x"]
    assert [m.openid for m in online_members(rows, exclude_tunnel="t1")] == ["o-ann", "o-x"]
    joined = online_members(rows[:1], include=Member("o-cy", "Cy"))
    assert [m.nick for m in joined] == ["bob", "Cy"]


def test_memberships_track_rooms_of_open_tunnels() -> None:
    rooms = Memberships()
    rooms.connected("t1")
    assert rooms.of("t1") == [DEFAULT_ROOM]
    assert rooms.join("t1", "tech") and not rooms.join("t1", "tech")
    assert rooms.leave("t1", "lobby") and not rooms.leave("t1", "lobby")
    assert rooms.closed("t1") == ["tech"] and rooms.closed("t1") == []
    assert check_room("games") == "games"
    with pytest.raises(ProtocolError):
        check_room("../etc")


def test_protocol_frames() -> None:
    assert decode('{"type": "chat", "text": "你好"}') == {"type": "chat", "text": "你好"}
    assert encode("chat", text="你好") == '{"type":"chat","text":"你好"}'
    for bad in (None, "not json", "[1]", '{"no": "type"}', '{"type": 1}', "x" * 70_000):
        with pytest.raises(ProtocolError):
            decode(bad)
    assert text_field({"t": "  hi "}, "t", max_len=5) == "hi"
    for value in ("", "   ", 3, "toolong"):
        with pytest.raises(ProtocolError):
            text_field({"t": value}, "t", max_len=5)
    assert nick_of({"nickName": "Ann"}, "x") == "Ann" and nick_of({}, "x") == "x"


def test_check_stroke_normalises_and_refuses_bad_input() -> None:
    stroke = check_stroke({"color": "#AABBCC", "width": 3, "points": [[0, 0], [0.123456, 1]]})
    assert stroke == {"color": "#aabbcc", "width": 3.0, "points": [[0.0, 0.0], [0.1235, 1.0]]}
    good = {"color": "#000000", "width": 2, "points": [[0.5, 0.5]]}
    for bad in (
        None,
        {**good, "color": "red"},
        {**good, "width": 0},
        {**good, "width": True},
        {**good, "points": []},
        {**good, "points": [[0.5, 1.5]]},
        {**good, "points": [[0.5]]},
        {**good, "points": [["0", 0]]},
        {**good, "points": [[0.1, 0.1]] * (MAX_POINTS + 1)},
    ):
        with pytest.raises(ProtocolError):
            check_stroke(bad)


def test_stroke_store_keeps_each_users_strokes_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "board.sqlite3"
    store = StrokeStore(path)
    stroke = check_stroke({"color": "#112233", "width": 4, "points": [[0.1, 0.2], [0.3, 0.4]]})
    first = store.add("o-ann", "Ann", stroke)
    store.add("o-bob", "Bob", stroke)
    store.add("o-ann", "Ann", stroke)
    store.close()

    again = StrokeStore(path)
    assert [s.openid for s in again.all()] == ["o-ann", "o-bob", "o-ann"]
    assert again.of_user("o-ann")[0].id == first.id
    assert again.all()[0].to_json() == {"id": first.id, "openid": "o-ann", "nick": "Ann", **stroke}
    assert again.clear_user("o-ann") == 2
    assert [s.openid for s in again.all()] == ["o-bob"]
    again.close()

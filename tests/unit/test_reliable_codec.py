"""The reliable protocol's frames and sequences, by property: what the broker writes
parses back to itself, anything else is refused with ``FrameError`` (never another
exception), and a tunnel's sequences behave as a plain model of them does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.tunnels import reliable
from tunnel_broker.tunnels.resume import Accept, ResumeState

seqs = st.integers(min_value=1, max_value=reliable.MAX_SEQ)
payloads = st.one_of(st.text(), st.binary())


@given(seqs, payloads)
def test_a_message_frame_parses_back_to_its_number_and_payload(
    seq: int, payload: str | bytes
) -> None:
    frame = reliable.data_frame(seq, payload)
    assert type(frame) is type(payload)
    assert reliable.parse(frame) == reliable.Frame(reliable.DATA, seq, payload)


@given(st.integers(min_value=0, max_value=reliable.MAX_SEQ))
def test_an_ack_frame_parses_back(seq: int) -> None:
    assert reliable.parse(reliable.ack_frame(seq)) == reliable.Frame(reliable.ACK, seq)


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_any_frame_parses_or_is_refused_with_frame_error(frame: str | bytes) -> None:
    try:
        parsed = reliable.parse(frame)
    except reliable.FrameError:
        return
    assert parsed.kind in (reliable.DATA, reliable.ACK, reliable.HEARTBEAT)
    if parsed.kind == reliable.DATA:
        assert reliable.data_frame(parsed.seq, parsed.payload) == frame


@pytest.mark.parametrize(
    "frame",
    ["", ":", "m:", "m0:", "m01:", "m-1:", "m1", "a:", "a1:x", "h:x", "h1:", "q1:", "m\uff11:x",
     f"m{reliable.MAX_SEQ + 1}:", "m" + "1" * 17 + ":", b"a1:", b"h:", b"\xff1:"],
)  # fmt: skip
def test_frames_outside_the_protocol(frame: str | bytes) -> None:
    with pytest.raises(reliable.FrameError):
        reliable.parse(frame)


def test_the_header_ends_at_the_first_colon_and_payloads_may_hold_more() -> None:
    assert reliable.parse("m7:a:b:c").payload == "a:b:c"
    assert reliable.parse(b"m7:\x00:\xff").payload == b"\x00:\xff"
    assert reliable.parse("h:") == reliable.Frame(reliable.HEARTBEAT)


def test_the_welcome_is_json_after_its_header() -> None:
    frame = reliable.welcome_frame("tun_x", True, 41, 60.0)
    assert frame.startswith("w:")
    assert json.loads(frame[2:]) == {
        "tunnel_id": "tun_x",
        "resumed": True,
        "accepted": 41,
        "resume_window_seconds": 60.0,
    }


@pytest.mark.parametrize(("value", "point"), [(None, None), ("0", 0), ("17", 17)])
def test_resume_points(value: str | None, point: int | None) -> None:
    assert reliable.resume_point(value) == point


@pytest.mark.parametrize("value", ["", "-1", "01", "x", "1e3", str(reliable.MAX_SEQ + 1)])
def test_bad_resume_points(value: str) -> None:
    with pytest.raises(reliable.FrameError):
        reliable.resume_point(value)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.binary(max_size=30)),
        st.tuples(st.just("ack"), st.integers(min_value=0, max_value=60)),
    ),
    max_size=80,
)


@given(operations, st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=300))
def test_pushes_are_kept_until_acknowledged_within_the_bounds(
    ops: list[tuple[str, object]], max_messages: int, max_bytes: int
) -> None:
    state = ResumeState(max_messages, max_bytes)
    model: list[tuple[int, bytes]] = []
    sent = 0
    for op, value in ops:
        if op == "push":
            assert isinstance(value, bytes)
            fits = (
                len(model) < max_messages
                and sum(len(p) for _, p in model) + len(value) <= max_bytes
            )
            seq = state.record(value)
            if fits:
                sent += 1
                assert seq == sent
                model.append((sent, value))
            else:
                assert seq is None
        else:
            assert isinstance(value, int)
            assert state.acknowledge(value) == (value <= sent)
            if value <= sent:
                model = [(s, p) for s, p in model if s > value]
        assert state.missed(0) == model
        assert state.unacked_bytes == sum(len(p) for _, p in model)
    assert state.missed(0) == model


@given(st.lists(st.integers(min_value=1, max_value=12), max_size=40))
def test_each_client_message_is_accepted_once_in_order(arrivals: list[int]) -> None:
    state = ResumeState(10, 1000)
    accepted: list[int] = []
    for seq in arrivals:
        verdict = state.accept(seq)
        if verdict is Accept.NEW:
            accepted.append(seq)
        expected = (
            Accept.NEW if seq == len(accepted) and verdict is Accept.NEW
            else Accept.DUPLICATE if seq <= len(accepted) else Accept.GAP
        )  # fmt: skip
        assert verdict is expected
    assert accepted == list(range(1, len(accepted) + 1))

"""Frames encoded once for many sockets are exactly what a WebSocket client parses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from tunnel_broker.tunnels import frames
from tunnel_broker.tunnels.writer import send_message


def parsed(data: bytes) -> Frame:
    """The frame a client reads from ``data`` (server frames: unmasked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@given(st.text(max_size=70_000))
def test_text_round_trips(text: str) -> None:
    frame = parsed(frames.encode(text))
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data.decode() == text


@given(st.binary(max_size=70_000))
def test_binary_round_trips(data: bytes) -> None:
    frame = parsed(frames.encode(data))
    assert frame.opcode is Opcode.BINARY and frame.fin
    assert frame.data == data


def test_length_boundaries_use_the_shortest_header() -> None:
    for size, header in ((125, 2), (126, 4), (65535, 4), (65536, 10)):
        assert len(frames.encode(b"x" * size)) == size + header


def test_a_message_keeps_its_frame_for_every_socket() -> None:
    message = send_message("héllo")
    first = frames.of_message(message)
    assert frames.of_message(message) is first
    assert parsed(first).data.decode() == "héllo"

"""Tunnel: pushes, the slow-consumer close, the first close winning, approval, takeover."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable

import pytest

from tests.support.waiting import settle, until
from tunnel_broker.apps import App, parse_apps
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.tunnels.writer import Message

APP: App = parse_apps(
    [
        {
            "id": "demo",
            "api_keys": ["tbk_" + "x" * 24],
            "webhook_url": "http://127.0.0.1:9/hook",
            "webhook_secrets": ["whsec_" + base64.b64encode(bytes(range(32))).decode()],
            "limits": {"messages_per_second": 1000, "message_burst": 1000},
        }
    ]
)[0]


class FakeSocket:
    """An ASGI ``send`` that completes at once while ``writable`` is set and suspends
    (writing nothing) while it is clear."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        if not self.writable.is_set():
            await self.writable.wait()
        self.sent.append(message)

    @property
    def closes(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "websocket.close"]


def make_tunnel(
    socket: FakeSocket, tunnel_id: str = "t1", user_id: str = "u1", groups: Iterable[str] = ()
) -> Tunnel:
    return Tunnel(APP, tunnel_id, user_id, {}, {}, set(groups), b"{}", socket.send)


async def test_push_text_sends_a_text_frame() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    assert tunnel.push("hello")
    assert socket.sent == [{"type": "websocket.send", "text": "hello"}]


async def test_push_bytes_sends_a_binary_frame() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    assert tunnel.push(b"\x00\x01")
    assert socket.sent == [{"type": "websocket.send", "bytes": b"\x00\x01"}]


async def test_push_on_a_closing_tunnel_is_refused_and_not_sent() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    assert tunnel.close(CloseCode.NORMAL, "done")
    assert tunnel.closing
    assert not tunnel.push("late")
    assert socket.sent == [{"type": "websocket.close", "code": 1000, "reason": "done"}]


async def test_push_while_suspended_is_accepted_and_delivered_later() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    tunnel = make_tunnel(socket)
    assert tunnel.push("a")
    assert tunnel.push("b")
    assert not tunnel.closing
    socket.writable.set()
    await until(lambda: len(socket.sent) == 2)
    assert [m["text"] for m in socket.sent] == ["a", "b"]


async def test_slow_consumer_is_closed_with_1008() -> None:
    socket = FakeSocket()
    socket.writable.clear()
    tunnel = make_tunnel(socket)
    tunnel.writer.max_backlog = 3
    assert [tunnel.push(str(n)) for n in range(3)] == [True, True, True]
    await settle()  # the drain task waits for the socket
    assert not tunnel.closing
    assert not tunnel.push("one too many")
    assert tunnel.close_code == 1008
    assert tunnel.close_reason == "slow_consumer"
    assert not tunnel.push("after close")
    socket.writable.set()
    await until(lambda: bool(socket.sent))
    await settle()
    # The backlog is dropped: the client hears why, and nothing else.
    assert socket.sent == [{"type": "websocket.close", "code": 1008, "reason": "slow_consumer"}]


async def test_first_close_wins() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    assert tunnel.close(CloseCode.MESSAGE_TOO_BIG, "message_too_big")
    assert not tunnel.close(CloseCode.NORMAL, "later")
    assert tunnel.close_code == CloseCode.MESSAGE_TOO_BIG
    assert tunnel.close_reason == "message_too_big"
    assert socket.closes == [{"type": "websocket.close", "code": 1009, "reason": "message_too_big"}]


async def test_close_replaced_after_a_close_keeps_the_first_cause() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    tunnel.close(CloseCode.GOING_AWAY, "idle")
    assert not tunnel.close_replaced(CloseCode.REPLACED, "replaced")
    assert (tunnel.close_code, tunnel.close_reason) == (CloseCode.GOING_AWAY, "idle")


async def test_close_replaced_marks_the_tunnel_replaced() -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    replaced_before = tunnel.replaced
    assert tunnel.close_replaced(CloseCode.SERVICE_RESTART, "restart")
    assert (replaced_before, tunnel.replaced) == (False, True)
    assert (tunnel.close_code, tunnel.close_reason) == (1012, "restart")
    assert socket.closes == [{"type": "websocket.close", "code": 1012, "reason": "restart"}]


async def test_plain_close_does_not_mark_the_tunnel_replaced() -> None:
    tunnel = make_tunnel(FakeSocket())
    tunnel.close(CloseCode.NORMAL, "")
    assert not tunnel.replaced


async def test_wait_approved_returns_when_approved() -> None:
    tunnel = make_tunnel(FakeSocket())
    waiter = asyncio.create_task(tunnel.wait_approved())
    await settle()
    assert not waiter.done()
    tunnel.approve()
    await asyncio.wait_for(waiter, 1)
    assert tunnel.approved.done()
    assert not tunnel.closing


async def test_wait_approved_returns_when_closed_before_approval() -> None:
    tunnel = make_tunnel(FakeSocket())
    waiter = asyncio.create_task(tunnel.wait_approved())
    await settle()
    assert not waiter.done()
    tunnel.close(CloseCode.REJECTED, "rejected")
    await asyncio.wait_for(waiter, 1)
    assert not tunnel.approved.done()


async def test_wait_approved_returns_at_once_when_already_approved_or_closed() -> None:
    approved = make_tunnel(FakeSocket())
    approved.approve()
    await asyncio.wait_for(approved.wait_approved(), 1)
    closed = make_tunnel(FakeSocket())
    closed.close(CloseCode.NORMAL, "")
    await asyncio.wait_for(closed.wait_approved(), 1)


async def test_approve_twice_is_harmless() -> None:
    tunnel = make_tunnel(FakeSocket())
    tunnel.approve()
    tunnel.approve()
    assert tunnel.approved.done()


async def test_take_over_moves_groups_and_closes_the_old_socket_with_4409() -> None:
    old_socket, new_socket = FakeSocket(), FakeSocket()
    old = make_tunnel(old_socket, groups={"a", "b"})
    new = make_tunnel(new_socket, groups={"c"})
    new.take_over(old)
    assert new.groups == {"a", "b", "c"}
    assert old.replaced
    assert (old.close_code, old.close_reason) == (CloseCode.REPLACED, "replaced")
    assert old_socket.closes == [{"type": "websocket.close", "code": 4409, "reason": "replaced"}]
    assert not new.closing
    assert not new.replaced
    assert new_socket.sent == []


async def test_take_over_of_an_approved_tunnel_is_approved() -> None:
    old = make_tunnel(FakeSocket())
    old.approve()
    new = make_tunnel(FakeSocket())
    new.take_over(old)
    assert new.approved.done()
    await asyncio.wait_for(new.wait_approved(), 1)


async def test_take_over_of_a_pending_tunnel_shares_its_pending_approval() -> None:
    old = make_tunnel(FakeSocket())
    new = make_tunnel(FakeSocket())
    new.take_over(old)
    assert new.approved is old.approved
    assert not new.approved.done()
    waiter = asyncio.create_task(new.wait_approved())
    await settle()
    assert not waiter.done()
    new.approve()
    await asyncio.wait_for(waiter, 1)
    assert old.approved.done()


async def test_approving_the_old_tunnel_after_takeover_approves_the_new_one() -> None:
    # The business server acknowledges the tunnel.connected event of the first socket.
    old = make_tunnel(FakeSocket())
    new = make_tunnel(FakeSocket())
    new.take_over(old)
    old.approve()
    assert new.approved.done()


@pytest.mark.parametrize(("payload", "key"), [("", "text"), (b"", "bytes")])
async def test_empty_payload_is_still_a_frame_of_its_type(payload: str | bytes, key: str) -> None:
    socket = FakeSocket()
    tunnel = make_tunnel(socket)
    assert tunnel.push(payload)
    assert socket.sent == [{"type": "websocket.send", key: payload}]


async def test_a_client_too_slow_for_large_pushes_is_closed_before_its_backlog_grows_large() -> (
    None
):
    socket = FakeSocket()
    socket.writable.clear()
    tunnel = make_tunnel(socket)
    big = "x" * (64 * 1024)
    pushed = 0
    while tunnel.push(big):
        pushed += 1
        assert pushed < 1000, "the byte bound never engaged"
    assert pushed * len(big) <= 4 * 1024 * 1024
    assert (tunnel.close_code, tunnel.close_reason) == (1008, "slow_consumer")

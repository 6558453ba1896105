"""Hub: the local index of tunnels by id, user, group and app, and what it does to them."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Iterator

import pytest

from tunnel_broker.apps import App, parse_apps
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.hub import PUSH_SLICE, Hub
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.tunnels.writer import Message


def _app_config(app_id: str, fill: str) -> dict[str, object]:
    return {
        "id": app_id,
        "api_keys": ["tbk_" + fill * 24],
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_secrets": ["whsec_" + base64.b64encode(fill.encode() * 32).decode()],
        "limits": {"messages_per_second": 1000, "message_burst": 1000},
    }


DEMO, OTHER = parse_apps([_app_config("demo", "x"), _app_config("other", "y")])


class FakeSocket:
    """An always-writable ASGI ``send``; ``log`` (shared by many sockets) records the
    order of everything sent."""

    def __init__(self, log: list[object] | None = None) -> None:
        self.sent: list[Message] = []
        self.log = log

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if self.log is not None:
            self.log.append(message)

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]

    @property
    def closes(self) -> list[tuple[int, str]]:
        return [(m["code"], m["reason"]) for m in self.sent if m["type"] == "websocket.close"]


SOCKETS: dict[Tunnel, FakeSocket] = {}


@pytest.fixture(autouse=True)
def _forget_sockets() -> Iterator[None]:
    yield
    SOCKETS.clear()


def make_tunnel(
    tunnel_id: str,
    user_id: str = "u1",
    groups: Iterable[str] = (),
    app: App = DEMO,
    socket: FakeSocket | None = None,
) -> Tunnel:
    socket = socket or FakeSocket()
    tunnel = Tunnel(app, tunnel_id, user_id, {}, {}, set(groups), b"{}", socket.send)
    SOCKETS[tunnel] = socket
    return tunnel


def socket_of(tunnel: Tunnel) -> FakeSocket:
    """The FakeSocket the tunnel writes to."""
    return SOCKETS[tunnel]


def ids(tunnels: Iterable[Tunnel]) -> list[str]:
    return sorted(t.tunnel_id for t in tunnels)


# ---- indexing --------------------------------------------------------------------------


async def test_attach_indexes_by_id_user_group_and_app() -> None:
    hub = Hub()
    t1 = make_tunnel("t1", "alice", {"g"})
    t2 = make_tunnel("t2", "alice")
    t3 = make_tunnel("t3", "bob", {"g", "h"})
    for tunnel in (t1, t2, t3):
        assert hub.attach(tunnel) is None
    assert len(hub) == 3
    assert hub.get("demo", "t1") is t1
    assert hub.get("demo", "nope") is None
    assert hub.user_tunnels("demo", "alice") == {t1, t2}
    assert hub.user_tunnels("demo", "bob") == {t3}
    assert hub.group_tunnels("demo", "g") == {t1, t3}
    assert hub.group_tunnels("demo", "h") == {t3}
    assert hub.count_by_app() == {"demo": 3}
    assert set(hub) == {t1, t2, t3}


async def test_detach_removes_every_index_entry() -> None:
    hub = Hub()
    t1 = make_tunnel("t1", "alice", {"g"})
    t2 = make_tunnel("t2", "alice", {"g"})
    hub.attach(t1)
    hub.attach(t2)
    assert hub.detach(t1)
    assert hub.get("demo", "t1") is None
    assert hub.user_tunnels("demo", "alice") == {t2}
    assert hub.group_tunnels("demo", "g") == {t2}
    assert hub.detach(t2)
    assert len(hub) == 0
    assert list(hub) == []
    assert hub.user_tunnels("demo", "alice") == set()
    assert hub.group_tunnels("demo", "g") == set()
    assert hub.count_by_app() == {}


async def test_detach_of_an_unknown_tunnel_returns_false() -> None:
    hub = Hub()
    assert not hub.detach(make_tunnel("t1"))


async def test_iterating_while_detaching_is_safe() -> None:
    hub = Hub()
    for n in range(5):
        hub.attach(make_tunnel(f"t{n}"))
    for tunnel in hub:
        hub.detach(tunnel)
    assert len(hub) == 0


# ---- takeover ----------------------------------------------------------------------------


async def test_attach_of_the_same_id_takes_the_old_socket_over() -> None:
    hub = Hub()
    old = make_tunnel("t1", "alice", {"g"})
    new = make_tunnel("t1", "alice", {"h"})
    assert hub.attach(old) is None
    assert hub.attach(new) is old
    assert hub.get("demo", "t1") is new
    assert len(hub) == 1
    assert (old.close_code, old.close_reason) == (CloseCode.REPLACED, "replaced")
    assert old.replaced
    assert socket_of(old).closes == [(4409, "replaced")]
    assert not new.closing
    # The new socket holds the old one's groups as well as its own, in the index too.
    assert new.groups == {"g", "h"}
    assert hub.group_tunnels("demo", "g") == {new}
    assert hub.group_tunnels("demo", "h") == {new}
    assert hub.user_tunnels("demo", "alice") == {new}
    assert hub.count_by_app() == {"demo": 1}


async def test_takeover_carries_approval_through_the_hub() -> None:
    hub = Hub()
    old = make_tunnel("t1")
    hub.attach(old)
    assert hub.awaiting_approval("demo", "t1")
    new = make_tunnel("t1")
    hub.attach(new)
    assert hub.awaiting_approval("demo", "t1")
    old.approve()
    assert not hub.awaiting_approval("demo", "t1")
    assert new.approved.done()


async def test_detach_of_the_replaced_socket_keeps_the_current_one() -> None:
    hub = Hub()
    old = make_tunnel("t1", "alice", {"g"})
    new = make_tunnel("t1", "alice")
    hub.attach(old)
    hub.attach(new)
    assert not hub.detach(old)
    assert hub.get("demo", "t1") is new
    assert hub.user_tunnels("demo", "alice") == {new}
    assert hub.group_tunnels("demo", "g") == {new}
    assert len(hub) == 1


async def test_leave_on_the_replaced_socket_does_not_touch_the_current_one() -> None:
    hub = Hub()
    old = make_tunnel("t1", groups={"g"})
    new = make_tunnel("t1")
    hub.attach(old)
    hub.attach(new)
    hub.leave(old, "g")
    assert hub.group_tunnels("demo", "g") == {new}


async def test_takeover_by_another_user_moves_the_user_index() -> None:
    hub = Hub()
    old = make_tunnel("t1", "alice")
    new = make_tunnel("t1", "bob")
    hub.attach(old)
    hub.attach(new)
    assert hub.user_tunnels("demo", "alice") == set()
    assert hub.user_tunnels("demo", "bob") == {new}


# ---- groups ------------------------------------------------------------------------------


async def test_join_and_leave_update_the_group_index() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.attach(tunnel)
    hub.join(tunnel, "g")
    assert "g" in tunnel.groups
    assert hub.group_tunnels("demo", "g") == {tunnel}
    hub.leave(tunnel, "g")
    assert "g" not in tunnel.groups
    assert hub.group_tunnels("demo", "g") == set()
    hub.leave(tunnel, "never-joined")
    assert tunnel.groups == set()


async def test_join_on_a_detached_tunnel_does_not_index_it() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.join(tunnel, "g")
    assert tunnel.groups == {"g"}
    assert hub.group_tunnels("demo", "g") == set()


async def test_detach_after_join_unindexes_the_joined_group() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.attach(tunnel)
    hub.join(tunnel, "g")
    hub.detach(tunnel)
    assert hub.group_tunnels("demo", "g") == set()


async def test_change_membership_by_tunnel_id() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.attach(tunnel)
    assert hub.change_membership("demo", "t1", "g", join=True)
    assert hub.group_tunnels("demo", "g") == {tunnel}
    assert tunnel.groups == {"g"}
    assert hub.change_membership("demo", "t1", "g", join=False)
    assert hub.group_tunnels("demo", "g") == set()
    assert tunnel.groups == set()


async def test_change_membership_of_an_unknown_tunnel_returns_false() -> None:
    hub = Hub()
    hub.attach(make_tunnel("t1"))
    assert not hub.change_membership("demo", "t2", "g", join=True)
    assert not hub.change_membership("other", "t1", "g", join=True)
    assert hub.group_tunnels("demo", "g") == set()
    assert hub.group_tunnels("other", "g") == set()


# ---- resolve -----------------------------------------------------------------------------


async def test_resolve_names_each_tunnel_once() -> None:
    hub = Hub()
    t1 = make_tunnel("t1", "alice", {"g", "h"})
    t2 = make_tunnel("t2", "alice", {"g"})
    t3 = make_tunnel("t3", "bob")
    for tunnel in (t1, t2, t3):
        hub.attach(tunnel)
    cases = {
        Target("tunnels", ("t1", "t3", "t1", "missing")): ["t1", "t3"],
        Target.tunnel("t2"): ["t2"],
        Target("users", ("alice",)): ["t1", "t2"],
        Target("users", ("alice", "bob", "alice", "nobody")): ["t1", "t2", "t3"],
        Target("groups", ("g",)): ["t1", "t2"],
        Target("groups", ("g", "h")): ["t1", "t2"],
        Target("groups", ("h",)): ["t1"],
        Target("groups", ("none",)): [],
        Target("all"): ["t1", "t2", "t3"],
        Target("tunnels", ()): [],
        Target("users", ()): [],
    }
    for target, expected in cases.items():
        assert ids(hub.resolve("demo", target)) == expected, target


async def test_resolve_of_an_app_without_tunnels_is_empty() -> None:
    hub = Hub()
    hub.attach(make_tunnel("t1", "alice", {"g"}))
    for target in (Target("all"), Target.tunnel("t1"), Target("users", ("alice",))):
        assert list(hub.resolve("other", target)) == []


# ---- push --------------------------------------------------------------------------------


async def test_push_reaches_the_target_and_returns_who_got_it() -> None:
    hub = Hub()
    t1 = make_tunnel("t1", "alice", {"g", "h"})
    t2 = make_tunnel("t2", "bob", {"g"})
    t3 = make_tunnel("t3", "carol")
    for tunnel in (t1, t2, t3):
        hub.attach(tunnel)
    assert hub.push("demo", Target("groups", ("g", "h")), "hi") == {"t1", "t2"}
    assert socket_of(t1).texts == ["hi"]
    assert socket_of(t2).texts == ["hi"]
    assert socket_of(t3).texts == []
    assert hub.usage.of("demo").messages_out == 2
    assert hub.usage.of("demo").bytes_out == 4
    assert hub.push("demo", Target("all"), b"\x01") == {"t1", "t2", "t3"}
    assert socket_of(t3).sent[-1] == {"type": "websocket.send", "bytes": b"\x01"}
    assert hub.usage.of("demo").messages_out == 5
    assert hub.usage.of("demo").bytes_out == 7
    assert hub.usage.of("other").messages_out == 0
    assert hub.usage.of("demo").open_tunnels == 3


async def test_push_skips_closing_tunnels_and_does_not_count_them() -> None:
    hub = Hub()
    t1 = make_tunnel("t1")
    t2 = make_tunnel("t2")
    hub.attach(t1)
    hub.attach(t2)
    t2.close(CloseCode.NORMAL, "bye")
    assert hub.push("demo", Target("all"), "hi") == {"t1"}
    assert hub.usage.of("demo").messages_out == 1
    assert socket_of(t2).texts == []


async def test_push_to_nobody_returns_an_empty_set() -> None:
    hub = Hub()
    hub.attach(make_tunnel("t1"))
    assert hub.push("demo", Target.tunnel("missing"), "hi") == set()
    assert hub.usage.of("demo").messages_out == 0


async def test_push_sliced_to_a_small_target_pushes_at_once() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.attach(tunnel)
    assert await hub.push_sliced("demo", Target("all"), "hi") == {"t1"}
    assert socket_of(tunnel).texts == ["hi"]
    assert hub.usage.of("demo").messages_out == 1


async def test_push_sliced_reaches_every_tunnel_of_a_large_target() -> None:
    hub = Hub()
    log: list[object] = []
    count = 2 * PUSH_SLICE + 7
    for n in range(count):
        hub.attach(make_tunnel(f"t{n}", f"u{n % 10}", socket=FakeSocket(log)))
    bystander = make_tunnel("t0", app=OTHER)
    hub.attach(bystander)
    pushed = await hub.push_sliced("demo", Target("all"), "wide")
    assert pushed == {f"t{n}" for n in range(count)}
    assert len(log) == count
    assert all(socket_of(t).texts == ["wide"] for t in hub if t.app is DEMO)
    assert socket_of(bystander).texts == []
    assert hub.usage.of("demo").messages_out == count
    assert hub.usage.of("other").messages_out == 0


async def test_push_sliced_yields_to_the_event_loop_between_slices() -> None:
    hub = Hub()
    log: list[object] = []
    for n in range(PUSH_SLICE + 1):
        hub.attach(make_tunnel(f"t{n}", socket=FakeSocket(log)))
    asyncio.get_running_loop().call_soon(log.append, "other work")
    await hub.push_sliced("demo", Target("all"), "wide")
    # Other callbacks ran after the first slice, not after the whole push.
    assert log.index("other work") == PUSH_SLICE
    assert len(log) == PUSH_SLICE + 2


# ---- close -------------------------------------------------------------------------------


async def test_close_returns_the_number_closed() -> None:
    hub = Hub()
    t1 = make_tunnel("t1", "alice")
    t2 = make_tunnel("t2", "alice")
    t3 = make_tunnel("t3", "bob")
    for tunnel in (t1, t2, t3):
        hub.attach(tunnel)
    assert hub.close("demo", Target("users", ("alice",)), CloseCode.NORMAL, "bye") == 2
    assert (t1.close_code, t1.close_reason) == (1000, "bye")
    assert socket_of(t2).closes == [(1000, "bye")]
    assert not t3.closing
    # Already closing tunnels are not counted again, and keep their first cause.
    assert hub.close("demo", Target("all"), CloseCode.GOING_AWAY, "shutdown") == 1
    assert t1.close_code == 1000
    assert t3.close_code == 1001
    assert hub.close("demo", Target.tunnel("missing"), 1000, "") == 0


async def test_open_tunnel_ignores_closing_tunnels() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    hub.attach(tunnel)
    assert hub.open_tunnel("demo", "t1") is tunnel
    assert hub.open_tunnel("demo", "t2") is None
    assert hub.open_tunnel("other", "t1") is None
    tunnel.close(CloseCode.NORMAL, "")
    assert hub.open_tunnel("demo", "t1") is None
    assert hub.get("demo", "t1") is tunnel


async def test_awaiting_approval_until_approved() -> None:
    hub = Hub()
    tunnel = make_tunnel("t1")
    assert not hub.awaiting_approval("demo", "t1")
    hub.attach(tunnel)
    assert hub.awaiting_approval("demo", "t1")
    assert not hub.awaiting_approval("other", "t1")
    tunnel.approve()
    assert not hub.awaiting_approval("demo", "t1")


# ---- apps --------------------------------------------------------------------------------


async def test_tunnels_of_two_apps_with_the_same_id_never_mix() -> None:
    hub = Hub()
    mine = make_tunnel("t1", "alice", {"g"}, app=DEMO)
    theirs = make_tunnel("t1", "alice", {"g"}, app=OTHER)
    assert hub.attach(mine) is None
    assert hub.attach(theirs) is None
    assert not mine.closing
    assert not theirs.closing
    assert len(hub) == 2
    assert hub.count_by_app() == {"demo": 1, "other": 1}
    assert hub.get("demo", "t1") is mine
    assert hub.get("other", "t1") is theirs
    assert hub.user_tunnels("demo", "alice") == {mine}
    assert hub.group_tunnels("other", "g") == {theirs}

    assert hub.push("demo", Target.tunnel("t1"), "to demo") == {"t1"}
    assert hub.push("other", Target("groups", ("g",)), "to other") == {"t1"}
    assert socket_of(mine).texts == ["to demo"]
    assert socket_of(theirs).texts == ["to other"]
    assert hub.usage.totals("messages_out") == {"demo": 1, "other": 1}

    hub.change_membership("other", "t1", "g", join=False)
    assert hub.group_tunnels("demo", "g") == {mine}
    assert hub.close("other", Target("all"), CloseCode.NORMAL, "") == 1
    assert not mine.closing
    assert hub.detach(theirs)
    assert hub.get("demo", "t1") is mine
    assert hub.count_by_app() == {"demo": 1}

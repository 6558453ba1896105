"""Presence listings are iterated across cursor pages, fetched only as needed."""

from __future__ import annotations

from typing import Any

import pytest

from business_sdk import UnexpectedResponseError


def info(tunnel_id: str) -> dict[str, Any]:
    return {
        "tunnel_id": tunnel_id,
        "user_id": "user-1",
        "identity": {},
        "meta": {},
        "groups": [],
        "connected_at": "2026-11-23T10:00:00.000Z",
        "node_id": "n1",
    }


async def test_user_tunnels_walks_every_page_passing_the_cursor_back(api: Any) -> None:
    api.fake.json(200, {"tunnels": [info("t1"), info("t2")], "next_cursor": "c1"})
    api.fake.json(200, {"tunnels": [info("t3")], "next_cursor": "c2"})
    api.fake.json(200, {"tunnels": [], "next_cursor": None})
    tunnels = await api.collect("user_tunnels", "user-1", page_size=2)
    assert [t.tunnel_id for t in tunnels] == ["t1", "t2", "t3"]
    assert [dict(r.url.params) for r in api.fake.requests] == [
        {"limit": "2"},
        {"limit": "2", "cursor": "c1"},
        {"limit": "2", "cursor": "c2"},
    ]
    assert {r.url.path for r in api.fake.requests} == {"/v1/users/user-1/tunnels"}


async def test_group_tunnels_stops_at_a_missing_cursor(api: Any) -> None:
    api.fake.json(200, {"tunnels": [info("t1")]})
    tunnels = await api.collect("group_tunnels", "room 1")
    assert [t.tunnel_id for t in tunnels] == ["t1"]
    assert api.fake.last.url.raw_path == b"/v1/groups/room%201/tunnels"
    assert not api.fake.last.url.params


async def test_pages_are_fetched_lazily(api: Any) -> None:
    api.fake.json(200, {"tunnels": [info("t1")], "next_cursor": "c1"})
    iterator = api.sdk.user_tunnels("user-1")
    if hasattr(iterator, "__anext__"):
        first = await iterator.__anext__()
        await iterator.aclose()
    else:
        first = next(iterator)
        iterator.close()
    assert first.tunnel_id == "t1"
    assert len(api.fake.requests) == 1


async def test_a_broker_repeating_a_cursor_does_not_loop_forever(api: Any) -> None:
    api.fake.json(200, {"tunnels": [info("t1")], "next_cursor": "c1"})
    api.fake.json(200, {"tunnels": [info("t1")], "next_cursor": "c1"})
    with pytest.raises(UnexpectedResponseError, match="c1"):
        await api.collect("user_tunnels", "user-1")


async def test_page_size_must_be_positive(api: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        await api.collect("user_tunnels", "user-1", page_size=0)

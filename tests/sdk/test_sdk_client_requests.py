"""Each client call sends the request the contract names and reads the answer into its type.

Every test runs against both clients (the ``api`` fixture), which proves they share the one
implementation of request building and response parsing.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from business_sdk import (
    CreatedTunnel,
    Message,
    SendResult,
    SyncTunnelBroker,
    Target,
    TunnelBroker,
    TunnelInfo,
)

TUNNEL_INFO: dict[str, Any] = {
    "tunnel_id": "tun_a",
    "user_id": "user-1",
    "identity": {"nick": "Ann"},
    "meta": {"room": "lobby"},
    "groups": ["lobby"],
    "connected_at": "2026-11-23T10:00:00.000Z",
    "node_id": "node-1",
}


async def test_create_tunnel_posts_only_the_fields_given(api: Any) -> None:
    api.fake.json(
        201,
        {
            "tunnel_id": "tun_1",
            "connect_url": "wss://broker.test/v1/connect?token=abc",
            "expires_at": "2026-11-23T10:00:00.000Z",
        },
    )
    tunnel = await api.call("create_tunnel", "user-1")
    request = api.fake.last
    assert (request.method, request.url.path) == ("POST", "/v1/tunnels")
    assert json.loads(request.content) == {"user_id": "user-1"}
    assert tunnel == CreatedTunnel(
        tunnel_id="tun_1",
        connect_url="wss://broker.test/v1/connect?token=abc",
        expires_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    )


async def test_create_tunnel_sends_identity_meta_groups_and_ttl_seconds(api: Any) -> None:
    api.fake.json(
        201, {"tunnel_id": "t", "connect_url": "ws://x", "expires_at": "2026-11-23T10:00:00Z"}
    )
    await api.call(
        "create_tunnel",
        "user-1",
        identity={"openid": "o-1", "nick": "小明"},
        meta={"room": 7},
        groups=("lobby", "vip"),
        ttl=timedelta(minutes=10),
    )
    assert api.fake.last_json() == {
        "user_id": "user-1",
        "identity": {"openid": "o-1", "nick": "小明"},
        "meta": {"room": 7},
        "groups": ["lobby", "vip"],
        "ttl": 600,
    }
    # Non-ASCII travels as UTF-8, not \\u escapes.
    assert "小明".encode() in api.fake.last.content
    assert api.fake.last.headers["content-type"] == "application/json"


async def test_every_request_carries_the_api_key_and_sdk_user_agent(api: Any) -> None:
    api.fake.json(200, {"closed": 0})
    await api.call("close_user", "user-1")
    headers = api.fake.last.headers
    assert headers["authorization"] == "Bearer tbk_test_0123456789abcdef"
    assert headers["user-agent"].startswith("tunnel-broker-python/")
    assert str(api.fake.last.url) == "http://broker.test/v1/users/user-1/close"


async def test_send_text_goes_as_data_and_bytes_as_data_base64(api: Any) -> None:
    api.fake.json(200, {"accepted": 1, "not_connected": []})
    api.fake.json(200, {"accepted": 1, "not_connected": ["tun_gone"]})
    first = await api.call("send", Target.users("user-1"), "hi 你好")
    second = await api.call("send", Target.tunnels("tun_a", "tun_gone"), b"\x00\xff")
    sent = [json.loads(r.content) for r in api.fake.requests]
    assert sent == [
        {"messages": [{"to": {"users": ["user-1"]}, "data": "hi 你好"}]},
        {
            "messages": [
                {
                    "to": {"tunnels": ["tun_a", "tun_gone"]},
                    "data_base64": base64.b64encode(b"\x00\xff").decode(),
                }
            ]
        },
    ]
    assert all(r.url.path == "/v1/messages" for r in api.fake.requests)
    assert first == SendResult(accepted=1, not_connected=[])
    assert second.not_connected == ["tun_gone"]


async def test_send_many_sends_one_batch_in_order(api: Any) -> None:
    api.fake.json(200, {"accepted": 3, "not_connected": []})
    result = await api.call(
        "send_many",
        [
            Message(Target.groups("lobby"), "a"),
            Message(Target.all(), bytearray(b"b")),
            Message(Target.tunnels(["t1", "t2"]), "c"),
        ],
    )
    assert api.fake.last_json() == {
        "messages": [
            {"to": {"groups": ["lobby"]}, "data": "a"},
            {"to": {"all": True}, "data_base64": "Yg=="},
            {"to": {"tunnels": ["t1", "t2"]}, "data": "c"},
        ]
    }
    assert result.accepted == 3


async def test_send_refuses_non_text_payloads_before_any_request(api: Any) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        await api.call("send", Target.all(), {"not": "encoded"})
    with pytest.raises(ValueError, match="at least one message"):
        await api.call("send_many", [])
    assert api.fake.requests == []


async def test_close_tunnel_sends_code_and_reason_and_reports_closed(api: Any) -> None:
    api.fake.json(200, {"closed": True})
    assert await api.call("close_tunnel", "tun_a", code=4001, reason="kicked") is True
    assert (api.fake.last.method, api.fake.last.url.path) == ("DELETE", "/v1/tunnels/tun_a")
    assert api.fake.last_json() == {"code": 4001, "reason": "kicked"}


async def test_close_without_code_or_reason_sends_no_body(api: Any) -> None:
    api.fake.json(200, {"closed": True})
    api.fake.json(200, {"closed": 2})
    await api.call("close_tunnel", "tun_a")
    assert api.fake.last.content == b""
    assert await api.call("close_user", "user-1", reason="logout") == 2
    assert api.fake.last_json() == {"reason": "logout"}


@pytest.mark.parametrize("code", [999, 1001, 1008, 3000, 5000, 4403.0, True])
async def test_close_codes_outside_the_business_range_are_refused_locally(
    api: Any, code: Any
) -> None:
    with pytest.raises((ValueError, TypeError)):
        await api.call("close_tunnel", "tun_a", code=code)
    assert api.fake.requests == []


async def test_join_and_leave_use_put_and_delete_on_the_membership(api: Any) -> None:
    api.fake.json(200, {"group": "lobby", "tunnel_id": "tun_a", "joined": True})
    api.fake.json(200, {"group": "lobby", "tunnel_id": "tun_a", "left": True})
    assert await api.call("join", "lobby", "tun_a") is None
    assert await api.call("leave", "lobby", "tun_a") is None
    assert [(r.method, r.url.path) for r in api.fake.requests] == [
        ("PUT", "/v1/groups/lobby/tunnels/tun_a"),
        ("DELETE", "/v1/groups/lobby/tunnels/tun_a"),
    ]


async def test_ids_are_percent_encoded_in_paths(api: Any) -> None:
    api.fake.json(200, {"closed": 0})
    await api.call("close_user", "ann@example.com:x?y#z")
    assert api.fake.last.url.raw_path == b"/v1/users/ann%40example.com%3Ax%3Fy%23z/close"


async def test_get_tunnel_reads_presence(api: Any) -> None:
    api.fake.json(200, TUNNEL_INFO)
    info = await api.call("get_tunnel", "tun_a")
    assert (api.fake.last.method, api.fake.last.url.path) == ("GET", "/v1/tunnels/tun_a")
    assert info == TunnelInfo(
        tunnel_id="tun_a",
        user_id="user-1",
        identity={"nick": "Ann"},
        meta={"room": "lobby"},
        groups=["lobby"],
        connected_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        node_id="node-1",
    )


async def test_extra_response_fields_from_a_newer_broker_are_ignored(api: Any) -> None:
    api.fake.json(200, {**TUNNEL_INFO, "recovered": True, "protocol": "native"})
    info = await api.call("get_tunnel", "tun_a")
    assert info.tunnel_id == "tun_a"


async def test_page_call_sends_limit_and_cursor(api: Any) -> None:
    api.fake.json(200, {"tunnels": [TUNNEL_INFO], "next_cursor": "c2"})
    page = await api.call("group_tunnels_page", "lobby", limit=5, cursor="c1")
    assert api.fake.last.url.path == "/v1/groups/lobby/tunnels"
    assert dict(api.fake.last.url.params) == {"limit": "5", "cursor": "c1"}
    assert page.next_cursor == "c2"
    assert [t.tunnel_id for t in page.tunnels] == ["tun_a"]


def test_base_url_and_api_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNNEL_BROKER_URL", "http://env.test/")
    monkeypatch.setenv("TUNNEL_BROKER_API_KEY", "tbk_from_env_0123456")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"closed": 0})

    with SyncTunnelBroker(
        http_client=httpx.Client(transport=httpx.MockTransport(handler))
    ) as broker:
        broker.close_user("u")
    assert str(seen[0].url) == "http://env.test/v1/users/u/close"
    assert seen[0].headers["authorization"] == "Bearer tbk_from_env_0123456"


def test_missing_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNNEL_BROKER_URL", raising=False)
    monkeypatch.delenv("TUNNEL_BROKER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="TUNNEL_BROKER_URL"):
        SyncTunnelBroker(api_key="k" * 20)
    with pytest.raises(ValueError, match="TUNNEL_BROKER_API_KEY"):
        TunnelBroker("http://x")


def test_repr_never_shows_the_api_key() -> None:
    broker = SyncTunnelBroker("http://broker.test", "tbk_secret_0123456789")
    try:
        assert "tbk_secret" not in repr(broker)
        assert "broker.test" in repr(broker)
    finally:
        broker.close()


async def test_a_shared_http_client_is_left_open() -> None:
    shared = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"closed": 0}))
    )
    async with TunnelBroker("http://broker.test", "k" * 20, http_client=shared) as broker:
        await broker.close_user("u")
    assert not shared.is_closed
    await shared.aclose()


async def test_an_owned_http_client_is_closed_and_closing_twice_is_fine() -> None:
    broker = TunnelBroker("http://broker.test", "k" * 20)
    await broker.aclose()
    await broker.aclose()
    assert broker._client.is_closed


async def test_an_owned_client_carries_auth_and_user_agent_as_defaults() -> None:
    async with TunnelBroker("http://broker.test", "tbk_owned_0123456789") as broker:
        headers = broker._client.headers
        assert headers["authorization"] == "Bearer tbk_owned_0123456789"
        assert headers["user-agent"].startswith("tunnel-broker-python/")

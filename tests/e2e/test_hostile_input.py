"""What an outside audit sent a running broker, each now refused with a clear 4xx (or a
documented close) instead of a 500, a silent failure or a bypassed limit."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_api_errors import assert_problem
from tests.support.broker import BrokerHandle, app_config, open_tunnel, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for, scaled

CJK = "\u4e2d"  # three bytes of UTF-8


async def _closed_with(ws) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            await asyncio.wait_for(ws.recv(), scaled(5))
    assert info.value.rcvd is not None, "closed without a close frame (1006)"
    return info.value.rcvd.code, info.value.rcvd.reason


# ---- close reasons are limited in UTF-8 bytes --------------------------------------------


async def test_a_close_reason_that_does_not_fit_a_close_frame_is_refused(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("cjk")
    async with open_tunnel(issued["connect_url"]) as ws:
        await check_for(5, lambda: receiver.events_of(issued["tunnel_id"], "tunnel.connected"))
        too_long = await demo.http.request(
            "DELETE", f"/v1/tunnels/{issued['tunnel_id']}", json={"reason": CJK * 42}
        )
        assert_problem(too_long, 422, "validation_failed")
        fits = await demo.http.request(
            "DELETE", f"/v1/tunnels/{issued['tunnel_id']}", json={"code": 4000, "reason": CJK * 41}
        )
        assert fits.status_code == 200, fits.text
        assert await _closed_with(ws) == (4000, CJK * 41)


# ---- "." and ".." are not ids ---------------------------------------------------------


@pytest.mark.parametrize("name", [".", ".."])
async def test_dot_segments_are_refused_as_ids_and_group_names(
    broker: BrokerHandle, name: str
) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("dots")
    encoded = name.replace(".", "%2E")
    for method, path in [
        ("PUT", f"/v1/groups/{encoded}/tunnels/{issued['tunnel_id']}"),
        ("DELETE", f"/v1/groups/{encoded}/tunnels/{issued['tunnel_id']}"),
        ("GET", f"/v1/groups/{encoded}/tunnels"),
        ("GET", f"/v1/users/{encoded}/tunnels"),
    ]:
        response = await demo.http.request(method, httpx.URL(broker.url + path))
        assert_problem(response, 422, "validation_failed")
    created = await demo.http.post("/v1/tunnels", json={"user_id": name})
    assert_problem(created, 422, "validation_failed")
    pushed = await demo.send({"groups": [name]}, "x")
    assert_problem(pushed, 422, "validation_failed")


def test_the_sdk_refuses_dot_segments_before_sending() -> None:
    from business_sdk._api import leave

    for name in (".", ".."):
        with pytest.raises(ValueError, match="cannot be an id"):
            leave(name, "tun_x")


# ---- no 500 for input JSON allows --------------------------------------------------------


async def test_deep_nesting_surrogates_and_odd_digits_are_4xx_without_tracebacks(
    broker: BrokerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    demo = broker.client("demo")
    headers = {"content-type": "application/json"}
    with caplog.at_level(logging.WARNING):
        nested = await demo.http.post("/v1/messages", content="[" * 100_000, headers=headers)
        assert_problem(nested, 400, "malformed_json")
        deep_identity = '{"user_id": "u", "identity": ' + '{"a":' * 5000 + "1" + "}" * 5001
        deep = await demo.http.post("/v1/tunnels", content=deep_identity, headers=headers)
        assert deep.status_code in (400, 422), deep.text
        for body in (
            '{"user_id": "u", "identity": {"n": "\\udc00"}}',
            '{"user_id": "u\\udc00"}',
        ):
            lone = await demo.http.post("/v1/tunnels", content=body, headers=headers)
            assert_problem(lone, 422, "validation_failed")
        push = '{"messages": [{"to": {"all": true}, "data": "\\udc00"}]}'
        assert_problem(
            await demo.http.post("/v1/messages", content=push, headers=headers),
            422,
            "validation_failed",
        )
        odd = await demo.http.get("/v1/users/u/tunnels", params={"limit": "\u00b2"})
        assert_problem(odd, 422, "validation_failed")
        async with httpx.AsyncClient(base_url=broker.url) as anon:
            login = await anon.post("/v1/wechat/demo/login", content="[" * 100_000, headers=headers)
            assert login.status_code < 500
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---- group limits -------------------------------------------------------------------------


async def test_group_names_in_paths_follow_the_rules_of_group_names(broker: BrokerHandle) -> None:
    demo = broker.client("demo")
    issued = await demo.issue("groups")
    for bad in ("a%20b", "x" * 200):
        response = await demo.http.put(f"/v1/groups/{bad}/tunnels/{issued['tunnel_id']}")
        assert_problem(response, 422, "validation_failed")


async def test_join_actions_respect_max_groups_per_tunnel() -> None:
    def join_many(events):  # type: ignore[no-untyped-def]
        return [
            {"type": "join", "event_id": e["id"], "group": f"g{n}"}
            for e in events
            if e["type"] == "tunnel.connected"
            for n in range(150)
        ]

    receiver = WebhookReceiver(secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    receiver.on_events = join_many
    async with receiver.serving():
        config = app_config("demo", receiver.url, receiver.secret, max_groups_per_tunnel=100)
        async with run_broker([config]) as broker:
            demo = broker.client("demo")
            issued = await demo.issue("joiner")
            async with open_tunnel(issued["connect_url"]):
                await check_for(5, lambda: receiver.events_of(issued["tunnel_id"]))

                async def groups() -> int:
                    info = await demo.http.get(f"/v1/tunnels/{issued['tunnel_id']}")
                    return len(info.json()["groups"])

                await check_for(5, lambda: groups())
                await asyncio.sleep(0.2)
                assert await groups() == 100


# ---- metric labels ------------------------------------------------------------------------


async def test_client_chosen_close_codes_do_not_create_metric_series(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    demo = broker.client("demo")
    for n in range(40):
        issued = await demo.issue(f"closer{n}")
        async with connect(issued["connect_url"]) as ws:
            await check_for(
                5, lambda i=issued: receiver.events_of(i["tunnel_id"], "tunnel.connected")
            )
            await ws.close(3000 + n, "bye")
    await check_for(5, lambda: len(broker.node.hub) == 0)
    async with httpx.AsyncClient(base_url=broker.url) as http:
        metrics = (await http.get("/metrics")).text
    codes = {
        line.split('code="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("tb_tunnel_closes_total{")
    }
    assert codes == {"3xxx"}


# ---- anonymous logins have budgets of their own ---------------------------------------------


async def test_junk_logins_do_not_starve_the_business_servers_api(
    receiver: WebhookReceiver,
) -> None:
    config = app_config(
        "shop",
        receiver.url,
        receiver.secret,
        api_requests_per_second=2,
        api_burst=2,
        login_requests_per_second_per_client=0.5,
        login_burst_per_client=3,
    )
    config.update(
        wechat_appid="wx0123456789abcdef",
        wechat_secret="s" * 32,
        wechat_api_base_url="http://127.0.0.1:9",
    )
    async with run_broker([config]) as broker, httpx.AsyncClient(base_url=broker.url) as anon:
        statuses = [
            (await anon.post("/v1/wechat/shop/login", json={})).status_code for _ in range(12)
        ]
        assert statuses[:3] == [422, 422, 422]  # charged, then refused for the missing code
        assert set(statuses[3:]) == {429}  # this address's login budget is spent
        shop = broker.client("shop")
        resolved = await shop.http.post("/v1/sessions/resolve", json={"skey": "unknown"})
        assert_problem(resolved, 401, "session_not_found")

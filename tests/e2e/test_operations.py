"""Operations endpoints: health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.broker import BrokerHandle, open_tunnel
from tests.support.waiting import check_for


async def test_health_ready_and_metrics(broker: BrokerHandle) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        issued = await broker.client("demo").issue("mona")
        async with open_tunnel(issued["connect_url"]) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5) == "echo:hi"
            text = (await http.get("/metrics")).text
            assert 'tb_tunnels_open{app="demo"} 1.0' in text
            assert 'tb_messages_in_total{app="demo"} 1.0' in text
            assert 'tb_messages_out_total{app="demo"} 1.0' in text
            assert 'tb_connects_total{app="demo",result="accepted"} 1.0' in text
            assert "tb_webhook_latency_seconds_bucket" in text
            assert "tb_webhook_buffer_events" in text
            assert "tb_ready 1.0" in text
            assert 'tb_api_requests_total{status="201"} 1.0' in text
            assert "token=" not in text


async def test_openapi_describes_every_route(broker: BrokerHandle) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert set(paths) >= {
        "/v1/tunnels",
        "/v1/tunnels/{tunnel_id}",
        "/v1/messages",
        "/v1/users/{user_id}/close",
        "/v1/users/{user_id}/tunnels",
        "/v1/groups/{group}/tunnels",
        "/v1/groups/{group}/tunnels/{tunnel_id}",
    }
    schemas = doc["components"]["schemas"]
    assert "user_id" in schemas["CreateTunnelRequest"]["properties"]
    assert "validation_failed" in schemas["Problem"]["properties"]["code"]["enum"]


async def test_drain_turns_unready_refuses_connects_and_closes_with_1012(
    broker: BrokerHandle, receiver
) -> None:  # type: ignore[no-untyped-def]
    from websockets.exceptions import ConnectionClosed

    demo = broker.client("demo")
    staying = await demo.issue("nina")
    late = await demo.issue("oscar")
    async with open_tunnel(staying["connect_url"]) as ws:
        await check_for(5, lambda: receiver.events_of(staying["tunnel_id"], "tunnel.connected"))
        drain = broker.node.begin_drain()
        async with httpx.AsyncClient(base_url=broker.url) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"] == "draining"
        async with open_tunnel(late["connect_url"]) as refused:
            try:
                await asyncio.wait_for(refused.recv(), 5)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1012
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            assert (exc.rcvd.code, exc.rcvd.reason) == (1012, "broker_restarting")
        await drain
    closed = receiver.events_of(staying["tunnel_id"], "tunnel.closed")
    assert [(e["code"], e["reason"]) for e in closed] == [(1012, "broker_restarting")]

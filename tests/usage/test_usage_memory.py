"""Usage metering on one broker (memory backend), end to end over real sockets: the
counts match what a scripted load did, an app sees only its own usage and deliveries,
and a clean stop writes the last counts."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.broker import BrokerHandle, app_config, new_secret, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.servers import run_uvicorn
from tests.support.waiting import check_for
from tests.usage.load import (
    APPID,
    WECHAT_SECRET,
    Expected,
    Pod,
    assert_tunnel_minutes,
    matches,
    mismatches,
    run_load,
    wechat_app,
)
from tunnel_broker.usage.report import app_usage
from tunnel_broker.usage.window import usage_window
from tunnel_broker.wechat.simulator import create_simulator_app


@dataclass
class World:
    broker: BrokerHandle
    receiver: WebhookReceiver
    simulator: Any

    def api(self, app_id: str = "demo") -> httpx.AsyncClient:
        return self.broker.client(app_id).http

    async def stored(self, app_id: str = "demo") -> dict[str, Any]:
        """Usage as kept, read without an API call (which would count one)."""
        window = usage_window(None, None, time.time(), 35)
        return await app_usage(self.broker.node.metering.store, app_id, window)


class Tap:
    """A live trace that only records deliveries."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []

    def event(self, app_id: str, event: Any) -> None:
        pass

    def push(self, app_id: str, target: Any, payload: str | bytes, via: str) -> None:
        pass

    def delivery(self, app_id: str, record: dict[str, Any]) -> None:
        self.deliveries.append(record)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    receiver = WebhookReceiver(secret=new_secret())  # no replies: pushes are the API's
    sim_app = create_simulator_app({APPID: WECHAT_SECRET})
    async with receiver.serving(), run_uvicorn(sim_app) as sim_port:
        demo = app_config("demo", receiver.url, receiver.secret)
        demo.update(wechat_app(f"http://127.0.0.1:{sim_port}"))
        other = app_config("other", receiver.url, receiver.secret)
        async with run_broker(
            [demo, other], usage_flush_seconds=0.1, webhook_retry_max_delay=0.3
        ) as broker:
            yield World(broker, receiver, sim_app.state.simulator)


async def scripted_load(world: World) -> Expected:
    pod = Pod(world.broker.url, world.api())
    return await run_load(
        [pod], world.receiver, world.simulator, lambda _: httpx.AsyncClient(base_url=pod.url)
    )


async def test_usage_counts_exactly_what_the_load_did(world: World) -> None:
    tap = Tap()
    world.broker.node.usage.of("demo").tap = tap
    done = await scripted_load(world)

    async def exact() -> bool:
        return matches((await world.stored())["totals"], done)

    with contextlib.suppress(AssertionError):
        await check_for(5, exact, what="usage to show the load")
    kept = await world.stored()
    assert not mismatches(kept["totals"], done)
    totals = kept["totals"]
    assert totals["peak_tunnels"] == done.peak_tunnels == 3
    assert_tunnel_minutes(totals, done)
    assert kept["buckets"] and all(b["hour"].endswith(":00:00Z") for b in kept["buckets"])

    # The app's own view over HTTP: the same, plus this very call.
    answer = await world.api().get("/v1/usage")
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["app_id"] == "demo"
    assert matches(shown["totals"], done, api_call_slack=1)
    assert shown["totals"]["tunnel_minutes"] == totals["tunnel_minutes"]
    day = await world.api().get(
        "/v1/usage", params={"from": time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))}
    )
    assert day.status_code == 200 and matches(day.json()["totals"], done, api_call_slack=2)

    # Every webhook attempt is in the recent deliveries, newest first, and was traced.
    deliveries = (await world.api().get("/v1/webhooks/deliveries?limit=200")).json()["deliveries"]
    assert len(deliveries) == world.receiver.attempts == done.counts["webhook_requests"]
    assert [d["at"] for d in deliveries] == sorted((d["at"] for d in deliveries), reverse=True)
    failed = [d for d in deliveries if d["outcome"] != "ok"]
    assert len(failed) == done.counts["webhook_failures"] >= 3
    assert all(d["status"] == 503 and d["outcome"] == "http_error" for d in failed)
    assert all(d["error"] == "HTTP 503" for d in failed)
    assert max(d["attempt"] for d in failed) >= 2
    ok = [d for d in deliveries if d["outcome"] == "ok"]
    assert all(d["status"] == 200 and d["error"] is None for d in ok)
    assert sum(d["events"] for d in ok) == done.counts["webhook_events"]
    assert all(d["latency_ms"] >= 0 for d in deliveries)
    assert sorted(tap.deliveries, key=json.dumps) == sorted(deliveries, key=json.dumps)
    text = json.dumps(deliveries)
    assert world.receiver.secret not in text and world.receiver.url not in text
    limited = await world.api().get("/v1/webhooks/deliveries", params={"limit": "2"})
    assert limited.json()["deliveries"] == deliveries[:2]


async def test_an_app_sees_only_its_own_usage_and_deliveries(world: World) -> None:
    done = await scripted_load(world)

    async def exact() -> bool:
        return matches((await world.stored())["totals"], done)

    await check_for(5, exact, what="usage to show the load")
    other = await world.api("other").get("/v1/usage")
    assert other.status_code == 200
    assert other.json()["app_id"] == "other"
    assert all(value == 0 for name, value in other.json()["totals"].items() if name != "api_calls")
    theirs = await world.api("other").get("/v1/webhooks/deliveries")
    assert theirs.json() == {"deliveries": []}
    # No argument names another app.
    sneaky = await world.api("other").get("/v1/usage", params={"app_id": "demo"})
    assert sneaky.json()["app_id"] == "other"


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/webhooks/deliveries"])
async def test_a_bad_key_gets_401_and_nothing_else(world: World, path: str) -> None:
    async with httpx.AsyncClient(base_url=world.broker.url) as http:
        missing = await http.get(path)
        wrong = await http.get(path, headers={"authorization": "Bearer tbk_not_a_key_at_all"})
    assert missing.status_code == 401 and missing.json()["code"] == "missing_api_key"
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"
    assert missing.headers["content-type"] == "application/problem+json"
    assert "deliveries" not in wrong.text and "buckets" not in wrong.text


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"to": "2026-12-01T10:00:00"},
        {"from": "2026-12-02", "to": "2026-12-01"},
        {"from": "2026-12-01T10:00:00+25:00"},
    ],
)
async def test_bad_windows_are_validation_failures(world: World, params: dict[str, str]) -> None:
    answer = await world.api().get("/v1/usage", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_failed"
    assert answer.json()["errors"][0]["field"] in params


@pytest.mark.parametrize("limit", ["0", "201", "abc", "²", "-1", "1" * 50])
async def test_bad_limits_are_validation_failures(world: World, limit: str) -> None:
    answer = await world.api().get("/v1/webhooks/deliveries", params={"limit": limit})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "limit"


async def test_a_clean_stop_writes_the_last_counts() -> None:
    receiver = WebhookReceiver(secret=new_secret())
    async with receiver.serving():
        config = app_config("demo", receiver.url, receiver.secret)
        # The meter would not flush on its own within the test: only the stop writes.
        async with run_broker([config], usage_flush_seconds=3600) as broker:
            api = broker.client("demo").http
            for _ in range(3):
                assert (await api.post("/v1/tunnels", json={"user_id": "u"})).status_code == 201
            window = usage_window(None, None, time.time(), 35)
            assert (await app_usage(broker.node.metering.store, "demo", window))["buckets"] == []
        kept = await app_usage(broker.node.metering.store, "demo", window)
    assert kept["totals"]["api_calls"] == 3

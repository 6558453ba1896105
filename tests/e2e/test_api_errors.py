"""Bad input gets a clear problem-details error with a stable code."""

from __future__ import annotations

import httpx
import pytest

from tests.support.broker import BrokerHandle


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_missing_and_wrong_api_keys_are_401(broker: BrokerHandle) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as anon:
        missing = await anon.post("/v1/tunnels", json={"user_id": "u"})
        assert_problem(missing, 401, "missing_api_key")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await anon.post(
            "/v1/tunnels",
            json={"user_id": "u"},
            headers={"authorization": "Bearer tbk_wrong_key_123456"},
        )
        body = assert_problem(wrong, 401, "invalid_api_key")
        assert "tbk_wrong" not in wrong.text, "the key must not be echoed"
        basic = await anon.get("/v1/tunnels/x", headers={"authorization": "Basic dXNlcjpwYXNz"})
        assert_problem(basic, 401, "invalid_api_key")
        assert body["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "user_id"),
        ({"user_id": 5}, "user_id"),
        ({"user_id": "u", "ttl": 1}, "ttl"),
        ({"user_id": "u", "groups": "notalist"}, "groups"),
        ({"user_id": "u", "surprise": 1}, "surprise"),
        ({"user_id": "has space"}, "user_id"),
    ],
)
async def test_schema_violations_are_422_naming_the_field(
    broker: BrokerHandle,
    payload: dict,
    field: str,  # type: ignore[type-arg]
) -> None:
    response = await broker.client("demo").http.post("/v1/tunnels", json=payload)
    body = assert_problem(response, 422, "validation_failed")
    assert any(e["field"].startswith(field) for e in body["errors"]), body


@pytest.mark.parametrize(
    "message",
    [
        {"to": {"users": ["a"], "groups": ["b"]}, "data": "x"},
        {"to": {}, "data": "x"},
        {"to": {"all": False}, "data": "x"},
        {"to": {"all": True}, "data": "x", "data_base64": "eA=="},
        {"to": {"all": True}, "data_base64": "not base64!"},
        {"to": {"tunnels": []}, "data": "x"},
    ],
)
async def test_bad_messages_are_422(broker: BrokerHandle, message: dict) -> None:  # type: ignore[type-arg]
    response = await broker.client("demo").http.post("/v1/messages", json={"messages": [message]})
    assert_problem(response, 422, "validation_failed")


async def test_oversized_push_is_422(broker: BrokerHandle) -> None:
    limit = broker.client("demo").app.limits.max_message_bytes
    response = await broker.client("demo").send({"all": True}, "x" * (limit + 1))
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"][0]["field"] == "messages.0.data"


async def test_malformed_json_and_wrong_media_type(broker: BrokerHandle) -> None:
    http = broker.client("demo").http
    bad = await http.post(
        "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(bad, 400, "malformed_json")
    empty = await http.post("/v1/messages", content=b"")
    assert_problem(empty, 400, "malformed_json")
    form = await http.post(
        "/v1/messages",
        content=b"a=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(form, 415, "unsupported_media_type")


async def test_body_too_large_is_413(broker: BrokerHandle) -> None:
    limit = broker.node.settings.max_api_body_bytes
    big = b'{"messages": [' + b" " * limit + b"]}"
    response = await broker.client("demo").http.post(
        "/v1/messages", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "body_too_large")


async def test_unknown_path_and_method(broker: BrokerHandle) -> None:
    http = broker.client("demo").http
    assert_problem(await http.get("/v1/nothing"), 404, "not_found")
    assert_problem(await http.patch("/v1/messages"), 405, "method_not_allowed")


async def test_api_rate_limit_is_429_with_retry_after(receiver) -> None:  # type: ignore[no-untyped-def]
    from tests.support.broker import app_config, run_broker

    configs = [
        app_config("tiny", receiver.url, receiver.secret, api_requests_per_second=1, api_burst=3)
    ]
    async with run_broker(configs) as handle:
        http = handle.client("tiny").http
        statuses = [(await http.get("/v1/users/u/tunnels")).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        limited = await http.get("/v1/users/u/tunnels")
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1

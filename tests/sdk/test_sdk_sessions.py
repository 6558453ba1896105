"""``resolve_session``, ``revoke_session`` and ``revoke_user_sessions``: the requests they send,
how they read the answers, and which broker answers mean "no session" rather than an error.

Every test runs against both clients (the ``api`` fixture).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from business_sdk import (
    AuthenticationError,
    ServiceUnavailableError,
    Session,
    UnexpectedResponseError,
    ValidationFailedError,
)

SKEY = "Zm9vYmFyYmF6cXV4LXNrZXktMjU2LWJpdHMtcmFuZG9t"
RESOLVED: dict[str, Any] = {
    "app_id": "demo",
    "openid": "oAbCdEfGhIjKlMnOpQrStUvWxYz0",
    "unionid": "uAbCdEfGhIjKlMnOpQrStUvWxYz0",
    "identity": {"openid": "oAbCdEfGhIjKlMnOpQrStUvWxYz0", "nickName": "小明", "gender": 1},
    "created_at": "2026-11-23T10:00:00.000Z",
    "expires_at": "2026-11-30T10:00:00.000Z",
}


def skey_field_invalid(problem: Any, field: str = "skey") -> httpx.Response:
    """The broker's 422 for a body whose ``skey`` it refuses (empty, longer than 256...)."""
    response: httpx.Response = problem(
        422,
        "validation_failed",
        f"invalid field(s): {field}",
        errors=[{"field": field, "message": "String should have at most 256 characters"}],
    )
    return response


async def test_resolve_session_posts_the_skey_and_reads_the_session(api: Any) -> None:
    api.fake.json(200, RESOLVED)
    session = await api.call("resolve_session", SKEY)
    request = api.fake.last
    assert (request.method, request.url.path) == ("POST", "/v1/sessions/resolve")
    assert json.loads(request.content) == {"skey": SKEY}
    assert request.headers["authorization"] == "Bearer tbk_test_0123456789abcdef"
    assert session == Session(
        app_id="demo",
        openid="oAbCdEfGhIjKlMnOpQrStUvWxYz0",
        unionid="uAbCdEfGhIjKlMnOpQrStUvWxYz0",
        identity={"openid": "oAbCdEfGhIjKlMnOpQrStUvWxYz0", "nickName": "小明", "gender": 1},
        created_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        expires_at=datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
    )


async def test_a_session_without_unionid_and_with_newer_fields_is_read(api: Any) -> None:
    api.fake.json(200, {**RESOLVED, "unionid": None, "scopes": ["future"]})
    session = await api.call("resolve_session", SKEY)
    assert session.unionid is None
    assert session.openid == RESOLVED["openid"]
    assert not hasattr(session, "scopes")


async def test_a_session_is_frozen(api: Any) -> None:
    api.fake.json(200, RESOLVED)
    session = await api.call("resolve_session", SKEY)
    with pytest.raises(AttributeError):
        session.openid = "someone-else"


async def test_an_unknown_expired_or_revoked_skey_resolves_to_none(api: Any, problem: Any) -> None:
    api.fake.reply(problem(401, "session_not_found", "log in again (wx.login)"))
    assert await api.call("resolve_session", SKEY) is None
    assert len(api.fake.requests) == 1  # an answer, not a failure to retry


@pytest.mark.parametrize("skey", ["", "x" * 300])
async def test_a_string_the_broker_refuses_as_an_skey_resolves_to_none(
    api: Any, problem: Any, skey: str
) -> None:
    # A client can put anything in X-WX-Skey; it must not become an error on the server.
    api.fake.reply(skey_field_invalid(problem))
    assert await api.call("resolve_session", skey) is None
    assert api.fake.last_json() == {"skey": skey}


async def test_a_validation_error_about_anything_else_is_raised(api: Any, problem: Any) -> None:
    api.fake.reply(skey_field_invalid(problem, field="(body)"))
    with pytest.raises(ValidationFailedError):
        await api.call("resolve_session", SKEY)


async def test_a_bad_api_key_is_not_mistaken_for_an_unknown_session(api: Any, problem: Any) -> None:
    api.fake.reply(problem(401, "invalid_api_key", "no app has this API key"))
    with pytest.raises(AuthenticationError) as caught:
        await api.call("resolve_session", SKEY)
    assert caught.value.code == "invalid_api_key"


async def test_resolve_is_retried_after_a_lost_answer_and_a_busy_broker(
    api: Any, problem: Any
) -> None:
    api.fake.reply(
        httpx.ReadError("connection reset"),
        problem(503, "backend_unavailable"),
        httpx.Response(200, json=RESOLVED),
    )
    session = await api.call("resolve_session", SKEY)
    assert session.openid == RESOLVED["openid"]
    assert len(api.fake.requests) == 3


async def test_a_broker_that_stays_unavailable_raises(api: Any, problem: Any) -> None:
    api.fake.reply(*[problem(503, "backend_unavailable") for _ in range(4)])
    with pytest.raises(ServiceUnavailableError):
        await api.call("resolve_session", SKEY)


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in RESOLVED.items() if k != "openid"},
        {**RESOLVED, "expires_at": 1700000000},
        {**RESOLVED, "created_at": "2026-11-23T10:00:00"},  # no timezone
        {**RESOLVED, "unionid": 7},
        {**RESOLVED, "identity": ["not", "an", "object"]},
    ],
)
async def test_a_resolve_answer_outside_the_contract_is_unexpected(
    api: Any, body: dict[str, Any]
) -> None:
    api.fake.json(200, body)
    with pytest.raises(UnexpectedResponseError, match="/v1/sessions/resolve"):
        await api.call("resolve_session", SKEY)


async def test_a_non_string_skey_is_refused_before_any_request(api: Any) -> None:
    for call in ("resolve_session", "revoke_session"):
        with pytest.raises(TypeError):
            await api.call(call, None)
    assert api.fake.requests == []


async def test_revoke_session_posts_the_skey_and_returns_the_count(api: Any) -> None:
    api.fake.json(200, {"revoked": 1})
    api.fake.json(200, {"revoked": 0})
    assert await api.call("revoke_session", SKEY) == 1
    assert await api.call("revoke_session", SKEY) == 0
    assert [(r.method, r.url.path) for r in api.fake.requests] == [
        ("POST", "/v1/sessions/revoke"),
        ("POST", "/v1/sessions/revoke"),
    ]
    assert [json.loads(r.content) for r in api.fake.requests] == [{"skey": SKEY}] * 2


async def test_revoking_a_string_that_cannot_be_an_skey_revokes_nothing(
    api: Any, problem: Any
) -> None:
    api.fake.reply(skey_field_invalid(problem))
    assert await api.call("revoke_session", "x" * 300) == 0


async def test_revoke_user_sessions_posts_the_openid_and_returns_the_count(api: Any) -> None:
    api.fake.json(200, {"revoked": 3})
    assert await api.call("revoke_user_sessions", "o-123") == 3
    assert api.fake.last.url.path == "/v1/sessions/revoke"
    assert api.fake.last_json() == {"openid": "o-123"}


@pytest.mark.parametrize("openid", ["", None, 42])
async def test_revoke_user_sessions_needs_an_openid(api: Any, openid: Any) -> None:
    with pytest.raises(ValueError, match="openid"):
        await api.call("revoke_user_sessions", openid)
    assert api.fake.requests == []


async def test_revoke_user_sessions_raises_validation_errors(api: Any, problem: Any) -> None:
    # Only the skey of a session is forgiven; a refused openid is a caller's bug.
    api.fake.reply(skey_field_invalid(problem, field="openid"))
    with pytest.raises(ValidationFailedError):
        await api.call("revoke_user_sessions", "o" * 300)


@pytest.mark.parametrize("body", [{"revoked": True}, {"revoked": "1"}, {}])
async def test_a_revoke_answer_outside_the_contract_is_unexpected(
    api: Any, body: dict[str, Any]
) -> None:
    api.fake.json(200, body)
    with pytest.raises(UnexpectedResponseError, match="/v1/sessions/revoke"):
        await api.call("revoke_session", SKEY)


async def test_revoke_is_retried_after_a_lost_answer(api: Any) -> None:
    # Revoking twice is harmless (the second finds nothing), so it is safe to repeat.
    api.fake.reply(httpx.ReadError("connection reset"), httpx.Response(200, json={"revoked": 2}))
    assert await api.call("revoke_user_sessions", "o-123") == 2
    assert len(api.fake.requests) == 2

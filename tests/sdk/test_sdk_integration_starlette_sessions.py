"""``require_session`` (FastAPI) and ``with_session`` (Starlette), through the real frameworks,
with a scripted broker behind the SDK client.

No ``from __future__ import annotations`` here: FastAPI reads the routes' ``Annotated``
dependencies at runtime, and they refer to local names.
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from business_sdk import ServiceUnavailableError, Session, TunnelBroker
from business_sdk.integrations.starlette import require_session, with_session

GOOD_SKEY = "good-skey"


class ScriptedSessions:
    """A broker that knows one skey, and counts the resolve requests it gets."""

    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/sessions/resolve"
        skey = json.loads(request.content)["skey"]
        self.resolved.append(skey)
        if self.down:
            return httpx.Response(503, json={"code": "backend_unavailable", "status": 503})
        if skey != GOOD_SKEY:
            return httpx.Response(
                401,
                json={"code": "session_not_found", "status": 401, "detail": "log in again"},
                headers={"content-type": "application/problem+json"},
            )
        return httpx.Response(
            200,
            json={
                "app_id": "demo",
                "openid": "o-ann",
                "unionid": None,
                "identity": {"openid": "o-ann", "nickName": "Ann"},
                "created_at": "2026-11-23T10:00:00Z",
                "expires_at": "2026-11-30T10:00:00Z",
            },
        )


@pytest.fixture
def sessions() -> ScriptedSessions:
    return ScriptedSessions()


@pytest.fixture
async def broker(sessions: ScriptedSessions) -> AsyncIterator[TunnelBroker]:
    transport = httpx.MockTransport(sessions.handler)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        TunnelBroker("http://broker.test", "tbk_test", http_client=http) as sdk,
    ):
        sdk._sleep = _no_sleep
        yield sdk


async def _no_sleep(_delay: float) -> None:
    return None


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_fastapi_dependency_gives_the_route_the_session(
    broker: TunnelBroker, sessions: ScriptedSessions
) -> None:
    app = FastAPI()
    current_session = require_session(broker)

    @app.get("/me")
    async def me(session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
        return {"openid": session.openid, "nick": session.identity["nickName"]}

    async with client_for(app) as client:
        ok = await client.get("/me", headers={"X-WX-Skey": GOOD_SKEY})
        lower = await client.get("/me", headers={"x-wx-skey": GOOD_SKEY})
        unknown = await client.get("/me", headers={"X-WX-Skey": "revoked"})
        missing = await client.get("/me")
        empty = await client.get("/me", headers={"X-WX-Skey": ""})
    assert ok.status_code == 200 and ok.json() == {"openid": "o-ann", "nick": "Ann"}
    assert lower.status_code == 200
    assert unknown.status_code == 401 and "log in again" in unknown.json()["detail"]
    assert missing.status_code == 401 and "X-WX-Skey" in missing.json()["detail"]
    assert empty.status_code == 401
    # No request to the broker for a request that carries no skey.
    assert sessions.resolved == [GOOD_SKEY, GOOD_SKEY, "revoked"]


async def test_fastapi_resolves_once_per_request_when_dependencies_share_it(
    broker: TunnelBroker, sessions: ScriptedSessions
) -> None:
    app = FastAPI()
    current_session = require_session(broker)

    async def openid(session: Annotated[Session, Depends(current_session)]) -> str:
        return session.openid

    @app.get("/both")
    async def both(
        session: Annotated[Session, Depends(current_session)],
        user: Annotated[str, Depends(openid)],
    ) -> dict[str, str]:
        return {"a": session.openid, "b": user}

    async with client_for(app) as client:
        response = await client.get("/both", headers={"X-WX-Skey": GOOD_SKEY})
    assert response.json() == {"a": "o-ann", "b": "o-ann"}
    assert sessions.resolved == [GOOD_SKEY]


async def test_fastapi_dependency_reads_another_header_if_told(broker: TunnelBroker) -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(
        session: Annotated[Session, Depends(require_session(broker, header="X-Session"))],
    ) -> str:
        return session.openid

    async with client_for(app) as client:
        ok = await client.get("/me", headers={"X-Session": GOOD_SKEY})
        wrong = await client.get("/me", headers={"X-WX-Skey": GOOD_SKEY})
    assert ok.json() == "o-ann"
    assert wrong.status_code == 401


async def test_a_broker_outage_is_not_reported_as_a_bad_session(
    broker: TunnelBroker, sessions: ScriptedSessions
) -> None:
    sessions.down = True
    app = FastAPI()

    @app.get("/me")
    async def me(session: Annotated[Session, Depends(require_session(broker))]) -> str:
        return session.openid

    async with client_for(app) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.get("/me", headers={"X-WX-Skey": GOOD_SKEY})


async def test_starlette_decorator_passes_the_session_or_answers_a_401_problem(
    broker: TunnelBroker, sessions: ScriptedSessions
) -> None:
    calls: list[str] = []

    @with_session(broker)
    async def me(request: Request, session: Session) -> Response:
        """Who is calling."""
        calls.append(session.openid)
        return JSONResponse({"openid": session.openid, "path": request.url.path})

    assert me.__name__ == "me" and me.__doc__ == "Who is calling."
    app = Starlette(routes=[Route("/me", me)])
    async with client_for(app) as client:
        ok = await client.get("/me", headers={"X-WX-Skey": GOOD_SKEY})
        unknown = await client.get("/me", headers={"X-WX-Skey": "revoked"})
        missing = await client.get("/me")
    assert ok.status_code == 200 and ok.json() == {"openid": "o-ann", "path": "/me"}
    for refused in (unknown, missing):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert (problem["status"], problem["code"]) == (401, "session_not_found")
    assert "X-WX-Skey" in missing.json()["detail"]
    assert calls == ["o-ann"]  # the endpoint never ran for a refused request
    assert sessions.resolved == [GOOD_SKEY, "revoked"]

"""Fixtures for the WeChat login tests: a real simulator served by uvicorn on a free port."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from tests.wechat.wechat_helpers import APPID, OTHER_APPID, SimulatorServer, run_server
from tunnel_broker.wechat.simulator import create_simulator_app


@pytest.fixture
def secret() -> str:
    # Distinctive, so a substring search in logs cannot match by accident.
    return "appsecret-" + secrets.token_hex(16)


@pytest.fixture
async def wechat(secret: str) -> AsyncIterator[SimulatorServer]:
    other_secret = "othersecret-" + secrets.token_hex(16)
    app = create_simulator_app({APPID: secret, OTHER_APPID: other_secret})
    async with run_server(app) as base_url:
        yield SimulatorServer(
            base_url=base_url,
            simulator=app.state.simulator,
            appid=APPID,
            secret=secret,
            other_appid=OTHER_APPID,
            other_secret=other_secret,
        )

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.broker import BrokerHandle, app_config, new_secret, run_broker
from tests.support.receiver import WebhookReceiver, echo_messages
from tests.support.redis_server import RedisServer

# Brokers started by tests (in process or as children, which inherit this) keep no
# undelivered events across a stop, unless a test asks for it: one test's leftovers must
# never reach another's receiver.
os.environ["TB_HANDOVER_FILE"] = ""


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    recv = WebhookReceiver(secret=new_secret(), on_events=echo_messages)
    async with recv.serving():
        yield recv


@pytest.fixture
async def broker(receiver: WebhookReceiver) -> AsyncIterator[BrokerHandle]:
    """One broker with two apps: ``demo`` (webhooks to ``receiver``) and ``other``."""
    configs = [
        app_config(
            "demo", receiver.url, receiver.secret, messages_per_second=1000, message_burst=1000
        ),
        app_config("other", receiver.url, receiver.secret),
    ]
    async with run_broker(configs) as handle:
        yield handle


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()

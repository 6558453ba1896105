"""What the admin, trace and console tests share: a real webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.broker import new_secret
from tests.support.receiver import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=new_secret())
    async with receiver.serving():
        yield receiver

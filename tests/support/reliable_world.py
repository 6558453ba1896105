"""One broker, its app ``demo`` and a business server that records every event: what the
tests of the reliable protocol and of the mini-program library drive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.broker import AppClient, BrokerHandle, app_config, new_secret, run_broker
from tests.support.receiver import WebhookReceiver


@dataclass
class World:
    broker: BrokerHandle
    receiver: WebhookReceiver
    api: AppClient

    async def tunnel(self, user: str = "u1") -> tuple[str, str]:
        issued = await self.api.issue(user)
        return issued["tunnel_id"], issued["connect_url"]

    def kinds(self, tunnel_id: str) -> list[str]:
        return [e["type"] for e in self.receiver.events_of(tunnel_id)]

    def messages(self, tunnel_id: str) -> list[str]:
        """The tunnel's messages at the business server (binary as ``base64:<data>``)."""
        return [
            e["data"] if "data" in e else "base64:" + e["data_base64"]
            for e in self.receiver.events_of(tunnel_id, "tunnel.message")
        ]

    async def push(self, tunnel_id: str, payloads: Iterable[str], rate: float = 0) -> None:
        """One API call per push, at ``rate`` per second (0: as fast as they go); each
        must reach an open or resumable tunnel."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n, data in enumerate(payloads):
            response = await self.api.send({"tunnels": [tunnel_id]}, data=data)
            assert response.status_code == 200, response.text
            assert response.json()["not_connected"] == [], response.json()
            if rate:
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - loop.time()))


@contextlib.asynccontextmanager
async def world_of(**limits: Any) -> AsyncIterator[World]:
    receiver = WebhookReceiver(secret=new_secret())
    async with receiver.serving():
        config = app_config("demo", receiver.url, receiver.secret, **limits)
        async with run_broker([config]) as broker:
            yield World(broker, receiver, broker.client("demo"))

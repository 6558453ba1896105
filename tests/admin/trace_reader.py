"""Reading a live trace (``GET /v1/trace``) the way the console does: a streamed GET
with the Authorization header, records collected as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class TraceReader:
    records: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int = 0

    def of(self, kind: str, **where: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r.get("kind") == kind and all(r.get(k) == v for k, v in where.items())
        ]


@contextlib.asynccontextmanager
async def reading_trace(base_url: str, key: str, **params: str) -> AsyncIterator[TraceReader]:
    reader = TraceReader()
    opened = asyncio.Event()

    async def read() -> None:
        headers = {"authorization": f"Bearer {key}"}
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as http,
            http.stream("GET", "/v1/trace", params=params, headers=headers) as response,
        ):
            reader.status = response.status_code
            opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    reader.records.append(json.loads(line[len("data: ") :]))
                elif line.startswith(":"):
                    reader.comments.append(line)

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task

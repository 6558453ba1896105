"""A business server's receive URL written against the legacy envelope in Python, for the
tests that drive the Wafer endpoints without the SDKs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from tunnel_broker.wafer import envelope

KEY = "tunnel-signature-key-1"
HOST = "biz.example.test"


@dataclass
class LegacyServer:
    """The business server's receive URL: verifies each event's signature, records it,
    and answers ``{"code": 0}`` (or what ``answers`` says first)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.json()
        if envelope.sign(body["data"], KEY) != body["signature"]:
            self.bad_signatures += 1
            return JSONResponse({"code": 9003, "message": "bad signature"}, status_code=400)
        if self.answers:
            return JSONResponse(self.answers.pop(0))
        self.events.append(json.loads(body["data"]))
        return JSONResponse({"code": 0, "message": "ok"})

    def of(self, tunnel_id: str) -> list[tuple[str, Any]]:
        return [(e["type"], e.get("content")) for e in self.events if e["tunnelId"] == tunnel_id]


def signed(data: Any, key: str = KEY, host: str = HOST) -> dict[str, str]:
    """The envelope a business server's SDK posts to the tunnel service."""
    text = data if isinstance(data, str) else json.dumps(data)
    return {"data": text, "tcId": envelope.tc_id(host), "signature": envelope.sign(text, key)}

"""The blocking client is generated from the async one, and must stay so.

``SyncTunnelBroker`` shares request building, parsing, retries and paging with ``TunnelBroker``
(all in private modules); what is left — the method signatures — is mechanically the async
file with ``await`` removed. This test re-derives it and fails on any drift. To regenerate after
editing the async client::

    .venv/bin/python tests/sdk/test_sdk_sync_twin.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "business_sdk"
ASYNC_FILE = SDK / "_async_client.py"
SYNC_FILE = SDK / "_sync_client.py"

RULES: list[tuple[str, str]] = [
    (r"``TunnelBroker``: the asyncio client", "``SyncTunnelBroker``: the blocking client"),
    (r"^import asyncio$", "import time"),
    (r"AsyncIterator, Awaitable, Callable, Iterable", "Callable, Iterable, Iterator"),
    (r"AsyncIterator", "Iterator"),
    (r"class TunnelBroker:", "class SyncTunnelBroker:"),
    (
        r"Async client: ``async with TunnelBroker\(url, api_key\) as broker: \.\.\.``\.",
        "Blocking twin of ``TunnelBroker`` (same calls, same results): for Flask, Django, scripts.",
    ),
    (r"httpx\.AsyncClient", "httpx.Client"),
    (r"TunnelBroker\(base_url=", "SyncTunnelBroker(base_url="),
    (r"async def __aenter__\(self\) -> TunnelBroker:", "def __enter__(self) -> SyncTunnelBroker:"),
    (r"async def __aexit__", "def __exit__"),
    (r"await self\.aclose\(\)", "self.close()"),
    (r"async def aclose", "def close"),
    (r"await self\._client\.aclose\(\)", "self._client.close()"),
    (
        r"Callable\[\[float\], Awaitable\[None\]\] = asyncio\.sleep",
        "Callable[[float], None] = time.sleep",
    ),
    (
        r"for tunnel in pager\.accept\(page\):\n(\s+)yield tunnel",
        "yield from pager.accept(page)",
    ),
    (r"async def ", "def "),
    (r"await ", ""),
]


def unasync(source: str) -> str:
    for pattern, replacement in RULES:
        source = re.sub(pattern, replacement, source, flags=re.MULTILINE)
    # ruff format keeps the generated file byte-identical to what the linters accept.
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(SYNC_FILE), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def test_sync_client_is_the_async_client_without_await() -> None:
    expected = unasync(ASYNC_FILE.read_text())
    assert SYNC_FILE.read_text() == expected, (
        "business_sdk/_sync_client.py drifted from _async_client.py; "
        "regenerate it with: .venv/bin/python tests/sdk/test_sdk_sync_twin.py"
    )


if __name__ == "__main__":
    SYNC_FILE.write_text(unasync(ASYNC_FILE.read_text()))
    print(f"wrote {SYNC_FILE}")

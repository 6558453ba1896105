"""Headless Chromium for browser tests: Debian's ``/usr/bin/chromium`` driven by
Playwright (which never downloads a browser here). Outside CI a browser test module is
skipped when either is missing (``require_browser``); in CI it must run."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    """Skip the calling test module (outside CI) without Playwright or Chromium."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the machine
        available = False
    else:
        available = os.path.exists(CHROMIUM)
    if not available and not os.environ.get("CI"):
        pytest.skip("playwright or /usr/bin/chromium missing", allow_module_level=True)

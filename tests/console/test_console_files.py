"""The web console's files (``tunnel_broker/console/``): served by the real broker with a
strict Content-Security-Policy, nothing but them readable, and shipped in the package.
The page itself is driven in a browser by ``test_console_browser.py``."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.support.broker import BrokerHandle, app_config, new_secret, run_broker
from tunnel_broker.console import STATIC, static_files

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def assert_secure_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = {}
    for directive in filter(None, (d.strip() for d in csp.split(";"))):
        name, _, value = directive.partition(" ")
        directives[name] = value
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')


async def test_console_index_is_served_with_the_security_headers(broker: BrokerHandle) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        for path in ("/console", "/console/"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            assert_secure_headers(response)
            assert '<script type="module" src="/console/static/main.js"></script>' in response.text
        head = await http.head("/console")
        assert head.status_code == 200
        assert head.headers["content-security-policy"]


async def test_every_shipped_file_is_served_as_is(broker: BrokerHandle) -> None:
    assert {"index.html", "main.js", "console.css", "chart.js", "trace.js"} <= set(SHIPPED)
    assert set(static_files()) == set(SHIPPED)
    async with httpx.AsyncClient(base_url=broker.url) as http:
        for name in SHIPPED:
            response = await http.get(f"/console/static/{name}")
            assert response.status_code == 200, name
            assert response.content == (STATIC / name).read_bytes()
            assert response.headers["content-type"] == TYPES[Path(name).suffix]
            assert_secure_headers(response)
            again = await http.get(
                f"/console/static/{name}", headers={"if-none-match": response.headers["etag"]}
            )
            assert again.status_code == 304
            assert again.content == b""


async def test_unknown_console_paths_are_404_and_only_get_is_allowed(
    broker: BrokerHandle,
) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        for path in (
            "/console/static/nope.js",
            "/console/static/",
            "/console/static/INDEX.HTML",
            "/console/nope",
            "/console/static/index.html/",
            "/console/static/.hidden",
        ):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "not_found"
        response = await http.post("/console", content=b"x")
        assert response.status_code == 405


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """A request sent byte for byte (HTTP clients normalise ``..`` away)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


TRAVERSALS = [
    "/console/static/../__init__.py",
    "/console/static/../../config.py",
    "/console/static/%2e%2e/__init__.py",
    "/console/static/%2E%2E%2F__init__.py",
    "/console/static/..%2f..%2fconfig.py",
    "/console/static/..%5c__init__.py",
    "/console/static/..\\__init__.py",
    "/console/static//etc/passwd",
    "/console/static/%2fetc%2fpasswd",
    "/console/static/./index.html",
    "/console/static/index.html%00.py",
    "/console/static/../../../../../../etc/passwd",
    "/console/../tunnel_broker/config.py",
    "/console/static/%252e%252e/__init__.py",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_no_file_outside_the_static_directory_can_be_read(
    broker: BrokerHandle, target: str
) -> None:
    status, rest = await raw_get(broker.url, target)
    assert status in (400, 404), (target, status)
    for secret_text in (b"root:", b"web console", b"Settings", b"import "):
        assert secret_text not in rest, target


async def test_the_console_can_be_turned_off() -> None:
    config = app_config("demo", "http://127.0.0.1:9/webhook", new_secret())
    async with run_broker([config], console=False) as broker, httpx.AsyncClient() as http:
        for path in ("/console", "/console/static/main.js"):
            response = await http.get(broker.url + path)
            assert response.status_code == 404
            assert "content-security-policy" not in response.headers


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    assert page.script_text.strip() == ""
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], tag
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None and tag != "a":
                assert value.startswith("/console/static/"), (tag, value)
    # The form never submits anywhere: the page sends the key in a header only.
    form = next(attrs for tag, attrs in page.tags if tag == "form")
    assert "action" not in form and form["method"] == "post"
    # No URL of another origin in any file, but the SVG namespace and a placeholder.
    allowed = ("http://www.w3.org/2000/svg", "https://biz.example.com/")
    for name in SHIPPED:
        text = (STATIC / name).read_text()
        for found in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s'\"`)]*", text):
            assert found.startswith(allowed), (name, found)
        assert "innerHTML" not in text and "eval(" not in text, name
        assert "localStorage" not in text, name


def test_the_package_ships_every_console_file() -> None:
    """``pyproject.toml``'s package data covers every file of ``console/static``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    patterns = [f"tunnel_broker/{p}" for p in package_data.get("tunnel_broker", [])]
    patterns += [
        f"tunnel_broker/console/{p}" for p in package_data.get("tunnel_broker.console", [])
    ]
    missing = [
        name
        for name in SHIPPED
        if not any(fnmatch.fnmatch(f"tunnel_broker/console/static/{name}", p) for p in patterns)
    ]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"

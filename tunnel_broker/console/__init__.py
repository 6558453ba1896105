"""The web console at ``/console``: static files shipped in this package, served from
memory with a strict Content-Security-Policy.

Only the files found in ``static/`` when the module is first used can be served: a
request names one of them exactly or gets 404, so no path (``..``, encoded slashes,
absolute paths) reaches anything else on disk. The page itself talks to the admin API
(operator keys) or the app API (app keys) with the key in an ``Authorization`` header;
nothing here authenticates, since nothing here is secret.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tunnel_broker.errors import ApiError
from tunnel_broker.http.requests import node_of

STATIC = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
PREFIX = "/console"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), clipboard-read=()",
    # Files are not fingerprinted: browsers may keep them but ask (ETag) before each use,
    # so an upgraded broker's console is never mixed with a cached older one.
    "cache-control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@cache
def static_files() -> dict[str, StaticFile]:
    """Every file under ``static/`` by its path relative to it (``/``-separated)."""
    files = {}
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        media_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        files[path.relative_to(STATIC).as_posix()] = StaticFile(
            body,
            media_type or "application/octet-stream",
            '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return files


def _serve(request: Request, name: str) -> Response:
    if not node_of(request).settings.console:
        raise ApiError("not_found", f"no endpoint at {request.url.path}")
    found = static_files().get(name)
    if found is None:
        raise ApiError("not_found", f"no console file at {request.url.path}")
    headers = {**SECURITY_HEADERS, "etag": found.etag}
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


async def index(request: Request) -> Response:
    return _serve(request, INDEX)


async def static(request: Request) -> Response:
    return _serve(request, request.path_params["name"])


routes = [
    Route(PREFIX, index, methods=["GET"]),
    Route(PREFIX + "/", index, methods=["GET"]),
    Route(PREFIX + "/static/{name:path}", static, methods=["GET"]),
]

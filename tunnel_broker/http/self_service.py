"""What an app may see and do about itself with its own API key: its settings (keys as
fingerprints) and rotating that key, so a business server can roll its credentials
without an operator. The old key keeps working for the overlap it asks for."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.admin.rotation import rotate_api_key
from tunnel_broker.admin.views import app_view
from tunnel_broker.apps import App
from tunnel_broker.http.admin import read_rotation
from tunnel_broker.http.quota_warning import app_endpoint
from tunnel_broker.node import Node


async def own_app(request: Request, node: Node, app: App) -> Response:
    return JSONResponse(app_view(app))


async def rotate_own_key(request: Request, node: Node, app: App) -> Response:
    rotation = await read_rotation(request, node)
    rotated, fresh = await node.admin.rotate(
        app.id, rotate_api_key, rotation.overlap_seconds, f"app:{app.id}", "app.rotate_api_key"
    )
    return JSONResponse({"api_key": fresh, "app": app_view(rotated)})


routes = [
    Route("/v1/app", app_endpoint(own_app), methods=["GET"]),
    Route("/v1/app/api-keys", app_endpoint(rotate_own_key), methods=["POST"]),
]

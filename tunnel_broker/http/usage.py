"""What an app may read about its own usage, with its own API key: hourly usage over a
period (``GET /v1/usage``) and its recent webhook deliveries
(``GET /v1/webhooks/deliveries``). An app only ever names itself: the key decides which
app's data answers, so no argument can reach another app's.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.http.quota_warning import app_endpoint
from tunnel_broker.http.requests import limit_arg
from tunnel_broker.node import Node
from tunnel_broker.usage.deliveries import KEPT
from tunnel_broker.usage.report import app_usage
from tunnel_broker.usage.window import usage_window

DEFAULT_DELIVERIES = 50


async def usage(request: Request, node: Node, app: App) -> Response:
    params = request.query_params
    window = usage_window(
        params.get("from"), params.get("to"), time.time(), node.settings.usage_retention_days
    )
    return JSONResponse(await app_usage(node.metering.store, app.id, window))


async def deliveries(request: Request, node: Node, app: App) -> Response:
    limit = limit_arg(request, DEFAULT_DELIVERIES, KEPT)
    found = await node.metering.deliveries.recent(app.id, limit)
    return JSONResponse({"deliveries": found})


routes = [
    Route("/v1/usage", app_endpoint(usage), methods=["GET"]),
    Route("/v1/webhooks/deliveries", app_endpoint(deliveries), methods=["GET"]),
]

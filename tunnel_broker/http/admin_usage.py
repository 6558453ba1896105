"""Usage for the operator: every app's (or one app's) hourly usage as JSON, and the same
as CSV for billing (``usage/report.py`` has the format). An app deleted since is still
listed for the hours it used."""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import APP_ID_PATTERN
from tunnel_broker.errors import ApiError
from tunnel_broker.http.admin import PREFIX, operator_of
from tunnel_broker.http.requests import node_of
from tunnel_broker.node import Node
from tunnel_broker.usage.report import all_usage, app_usage, render_csv
from tunnel_broker.usage.window import usage_window

_APP_ID = re.compile(APP_ID_PATTERN)


async def _reports(request: Request, node: Node) -> tuple[str, str, list[dict[str, object]]]:
    operator_of(request, node)
    params = request.query_params
    window = usage_window(
        params.get("from"), params.get("to"), time.time(), node.settings.usage_retention_days
    )
    store = node.metering.store
    app_id = params.get("app")
    if app_id is not None:
        if not _APP_ID.fullmatch(app_id):
            raise ApiError.invalid("app", "not an app id", "app is not a valid app id")
        reports = [await app_usage(store, app_id, window)]
    else:
        reports = await all_usage(store, window, known=[a.id for a in node.apps.all()])
    start, end = window.iso()
    return start, end, reports


async def usage(request: Request) -> Response:
    start, end, reports = await _reports(request, node_of(request))
    return JSONResponse({"from": start, "to": end, "apps": reports})


async def usage_csv(request: Request) -> Response:
    start, end, reports = await _reports(request, node_of(request))
    name = f"usage-{start[:13]}-{end[:13]}.csv".replace(":", "")
    return Response(
        render_csv(reports),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


routes = [
    Route(f"{PREFIX}/usage", usage, methods=["GET"]),
    Route(f"{PREFIX}/usage.csv", usage_csv, methods=["GET"]),
]

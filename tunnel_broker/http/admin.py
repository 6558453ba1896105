"""The admin API (``/admin/v1/...``, an operator key): apps created, changed, rotated and
deleted while the broker runs, pods and Redis health, the audit log.

Operator keys are not app keys (``admin/operators.py``); every change is audited
(``admin/store.py``). Usage and its CSV export are in ``http/admin_usage.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.admin.rotation import (
    DEFAULT_OVERLAP_SECONDS,
    MAX_OVERLAP_SECONDS,
    Rotate,
    rotate_api_key,
    rotate_webhook_secret,
)
from tunnel_broker.admin.store import invalid_app
from tunnel_broker.admin.views import app_view
from tunnel_broker.apps import APP_ID_PATTERN, App, new_api_key, new_webhook_secret
from tunnel_broker.errors import ApiError
from tunnel_broker.http.requests import limit_arg, node_of, parse_body, read_json
from tunnel_broker.node import Node

_APP_ID = re.compile(APP_ID_PATTERN)
DEFAULT_AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 1000


class CreateApp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    webhook_url: str
    limits: dict[str, Any] = {}
    trace_payloads: bool = False
    allow_session_tunnels: bool = False
    wechat_appid: str | None = None
    wechat_secret: str | None = None


class UpdateApp(BaseModel):
    """Only the fields given change; ``limits`` is merged into the current limits (a
    limit set to null goes back to none, for the quotas, or is refused)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    limits: dict[str, Any] | None = None
    trace_payloads: bool | None = None
    allow_session_tunnels: bool | None = None
    wechat_appid: str | None = None
    wechat_secret: str | None = None


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: Annotated[int, Field(ge=0, le=MAX_OVERLAP_SECONDS)] = DEFAULT_OVERLAP_SECONDS


def operator_of(request: Request, node: Node) -> str:
    return node.operators.authenticate(request.headers.get("authorization", ""))


def _app_id(request: Request) -> str:
    value: str = request.path_params["app_id"]
    if not _APP_ID.fullmatch(value):
        raise ApiError("app_not_found", "no app has this id")
    return value


def _validated(raw: dict[str, Any]) -> App:
    try:
        return App.model_validate(raw)
    except ValidationError as exc:
        raise invalid_app(exc) from None


def _shown(node: Node, app: App) -> dict[str, Any]:
    """An app as the operator sees it: its view, and whether the apps file owns it."""
    return {**app_view(app), "from_file": app.id in node.admin.file_app_ids}


async def whoami(request: Request) -> Response:
    return JSONResponse({"operator": operator_of(request, node_of(request))})


async def list_apps(request: Request) -> Response:
    node = node_of(request)
    operator_of(request, node)
    apps = sorted(await node.admin.all(), key=lambda a: a.id)
    return JSONResponse({"apps": [_shown(node, a) for a in apps]})


async def get_app(request: Request) -> Response:
    node = node_of(request)
    operator_of(request, node)
    return JSONResponse(_shown(node, await node.admin.get(_app_id(request))))


async def create_app(request: Request) -> Response:
    node = node_of(request)
    operator = operator_of(request, node)
    body = parse_body(CreateApp, await read_json(request, node))
    api_key, webhook_secret = new_api_key(), new_webhook_secret()
    app = _validated(
        {
            **body.model_dump(exclude_none=True),
            "api_keys": [api_key],
            "webhook_secrets": [webhook_secret],
        }
    )
    await node.admin.create(app, operator)
    return JSONResponse(
        {"app": _shown(node, app), "api_key": api_key, "webhook_secret": webhook_secret},
        status_code=201,
    )


async def update_app(request: Request) -> Response:
    node = node_of(request)
    operator = operator_of(request, node)
    body = parse_body(UpdateApp, await read_json(request, node))
    given = body.model_dump(exclude_unset=True)

    def change(app: App) -> App:
        merged = app.model_dump()
        for name, value in given.items():
            if name == "limits":
                merged["limits"] = {**merged["limits"], **(value or {})}
            else:
                merged[name] = value
        return App.model_validate(merged)

    app = await node.admin.update(_app_id(request), change, operator, "app.update")
    return JSONResponse(_shown(node, app))


async def delete_app(request: Request) -> Response:
    node = node_of(request)
    operator = operator_of(request, node)
    await node.admin.delete(_app_id(request), operator)
    return Response(status_code=204)


async def read_rotation(request: Request, node: Node) -> Rotation:
    """A rotation's body, which may be left out (the default overlap)."""
    raw = await read_json(request, node, optional=True)
    return parse_body(Rotation, raw if raw is not None else {})


async def _rotate(request: Request, rotate: Rotate, action: str, name: str) -> Response:
    node = node_of(request)
    operator = operator_of(request, node)
    rotation = await read_rotation(request, node)
    app, fresh = await node.admin.rotate(
        _app_id(request), rotate, rotation.overlap_seconds, operator, action
    )
    return JSONResponse({name: fresh, "app": _shown(node, app)})


async def rotate_key(request: Request) -> Response:
    return await _rotate(request, rotate_api_key, "app.rotate_api_key", "api_key")


async def rotate_secret(request: Request) -> Response:
    action = "app.rotate_webhook_secret"
    return await _rotate(request, rotate_webhook_secret, action, "webhook_secret")


async def audit(request: Request) -> Response:
    node = node_of(request)
    operator_of(request, node)
    limit = limit_arg(request, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)
    return JSONResponse({"entries": await node.admin.audit_entries(limit)})


async def pods(request: Request) -> Response:
    node = node_of(request)
    operator_of(request, node)
    from tunnel_broker.admin.pods import list_pods

    redis = node.admin.redis
    found = [node.status()] if redis is None else await list_pods(redis)
    health = node.backend.shared_state_health()
    shared = None
    if health is not None:
        shared = {
            "topology": health.topology,
            "healthy": health.healthy,
            "outages": health.outages,
            "failovers": health.failovers,
        }
    return JSONResponse({"pods": found, "redis": shared})


PREFIX = "/admin/v1"
routes = [
    Route(f"{PREFIX}/whoami", whoami, methods=["GET"]),
    Route(f"{PREFIX}/apps", list_apps, methods=["GET"]),
    Route(f"{PREFIX}/apps", create_app, methods=["POST"]),
    Route(f"{PREFIX}/apps/{{app_id}}", get_app, methods=["GET"]),
    Route(f"{PREFIX}/apps/{{app_id}}", update_app, methods=["PATCH"]),
    Route(f"{PREFIX}/apps/{{app_id}}", delete_app, methods=["DELETE"]),
    Route(f"{PREFIX}/apps/{{app_id}}/api-keys", rotate_key, methods=["POST"]),
    Route(f"{PREFIX}/apps/{{app_id}}/webhook-secrets", rotate_secret, methods=["POST"]),
    Route(f"{PREFIX}/audit", audit, methods=["GET"]),
    Route(f"{PREFIX}/pods", pods, methods=["GET"]),
]

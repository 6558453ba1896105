"""The OpenAPI 3.1 document, generated from the same pydantic schemas that validate."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from tunnel_broker import __version__
from tunnel_broker.errors import ERROR_TABLE
from tunnel_broker.http.openapi_admin import admin_paths, admin_schemas, own_app_paths
from tunnel_broker.http.schemas import (
    CloseRequest,
    CreateTunnelRequest,
    CreateTunnelResponse,
    MessagesRequest,
    MessagesResponse,
    TunnelInfo,
    TunnelPage,
)
from tunnel_broker.shapes import ID_SCHEMA
from tunnel_broker.usage.counters import COUNTS
from tunnel_broker.usage.deliveries import KEPT

_MODELS = (
    CreateTunnelRequest,
    CreateTunnelResponse,
    MessagesRequest,
    MessagesResponse,
    CloseRequest,
    TunnelInfo,
    TunnelPage,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _problem_responses(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        codes = sorted(s.code for s in ERROR_TABLE.values() if s.status == status)
        out[str(status)] = {
            "description": "Problem details; code one of: " + ", ".join(codes),
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
    return out


# Every authenticated call may be refused for its key, its rate or a backend outage; one
# with a body for the body; one naming something in its path for the name.
_ALWAYS = (401, 429, 503)
_BODY = (400, 413, 415, 422)
_PATH = (422,)


def _operation(
    summary: str,
    ok: tuple[int, dict[str, Any]],
    body: str | None = None,
    params: list[str] | None = None,
    errors: tuple[int, ...] = (),
    query: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"apiKey": []}],
        "responses": {str(ok[0]): {"description": "OK", **(_json(ok[1]) if ok[1] else {})}},
    }
    statuses = set(_ALWAYS) | set(errors)
    statuses |= set(_BODY) if body else set()
    statuses |= set(_PATH) if params or query else set()
    op["responses"].update(_problem_responses(*sorted(statuses)))
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": ID_SCHEMA} for p in params or []
    ] + (query or [])
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": body != "CloseRequest", **_json(_ref(body))}
    return op


_PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]
_CLOSED = {"type": "object", "required": ["closed"], "properties": {"closed": {"type": "boolean"}}}
_CLOSED_COUNT = {
    "type": "object",
    "required": ["closed"],
    "properties": {"closed": {"type": "integer", "minimum": 0}},
}


_INSTANT = {
    "type": "string",
    "anyOf": [{"format": "date-time"}, {"format": "date"}],
    "description": "An RFC 3339 date-time with an offset, or a date (its midnight, UTC)",
}
_USAGE_QUERY = [
    {"name": "from", "in": "query", "schema": _INSTANT},
    {"name": "to", "in": "query", "schema": _INSTANT},
]
_DELIVERIES_QUERY = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": KEPT}},
]
_COUNT = {"type": "integer", "minimum": 0}
_USAGE_FIELDS = {
    **dict.fromkeys(COUNTS, _COUNT),
    "tunnel_minutes": {"type": "number", "minimum": 0},
    "peak_tunnels": _COUNT,
}


def _usage_schemas() -> dict[str, Any]:
    """``GET /v1/usage`` and ``GET /v1/webhooks/deliveries`` (``usage/report.py``,
    ``usage/deliveries.py``)."""
    totals = {"type": "object", "required": list(_USAGE_FIELDS), "properties": _USAGE_FIELDS}
    bucket = {
        "type": "object",
        "required": ["hour", *_USAGE_FIELDS],
        "properties": {"hour": {"type": "string", "format": "date-time"}, **_USAGE_FIELDS},
    }
    nullable_int = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    delivery = {
        "type": "object",
        "required": ["at", "status", "outcome", "latency_ms", "events", "attempt", "error"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "status": nullable_int,
            "outcome": {"type": "string"},
            "latency_ms": {"type": "number", "minimum": 0},
            "events": _COUNT,
            "attempt": {"type": "integer", "minimum": 1},
            "error": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    return {
        "UsageBucket": bucket,
        "UsageTotals": totals,
        "Usage": {
            "type": "object",
            "required": ["app_id", "from", "to", "buckets", "totals"],
            "properties": {
                "app_id": {"type": "string"},
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time"},
                "buckets": {"type": "array", "items": _ref("UsageBucket")},
                "totals": _ref("UsageTotals"),
            },
        },
        "Delivery": delivery,
        "Deliveries": {
            "type": "object",
            "required": ["deliveries"],
            "properties": {
                "deliveries": {"type": "array", "items": _ref("Delivery"), "maxItems": KEPT}
            },
        },
    }


@lru_cache(maxsize=8)
def _document(server_url: str) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": sorted(ERROR_TABLE)},
        },
    }
    schemas.update(_usage_schemas())
    membership = {"type": "object"}
    paths = {
        "/v1/tunnels": {
            "post": _operation(
                "Issue a tunnel for a user",
                (201, _ref("CreateTunnelResponse")),
                "CreateTunnelRequest",
                errors=(403,),
            ),
            "get": _operation(
                "The app's tunnels, open or waiting for a resume, all pods",
                (200, _ref("TunnelPage")),
                query=_PAGING,
            ),
        },
        "/v1/tunnels/{tunnel_id}": {
            "get": _operation(
                "Presence of one tunnel", (200, _ref("TunnelInfo")), None, ["tunnel_id"], (404,)
            ),
            "delete": _operation(
                "Close a tunnel", (200, _CLOSED), "CloseRequest", ["tunnel_id"], (404,)
            ),
        },
        "/v1/messages": {
            "post": _operation(
                "Send messages to tunnels, users, groups or everyone",
                (200, _ref("MessagesResponse")),
                "MessagesRequest",
            )
        },
        "/v1/users/{user_id}/close": {
            "post": _operation(
                "Close all tunnels of a user", (200, _CLOSED_COUNT), "CloseRequest", ["user_id"]
            )
        },
        "/v1/users/{user_id}/tunnels": {
            "get": _operation(
                "A user's open tunnels", (200, _ref("TunnelPage")), None, ["user_id"], query=_PAGING
            )
        },
        "/v1/groups/{group}/tunnels": {
            "get": _operation(
                "A group's open tunnels", (200, _ref("TunnelPage")), None, ["group"], query=_PAGING
            )
        },
        "/v1/groups/{group}/tunnels/{tunnel_id}": {
            "put": _operation(
                "Add a tunnel to a group",
                (200, membership),
                None,
                ["group", "tunnel_id"],
                (404,),
            ),
            "delete": _operation(
                "Remove a tunnel from a group",
                (200, membership),
                None,
                ["group", "tunnel_id"],
                (404,),
            ),
        },
    }
    paths["/v1/usage"] = {
        "get": _operation(
            "This app's usage per hour over a period (default: the last 24 hours)",
            (200, _ref("Usage")),
            query=_USAGE_QUERY,
        )
    }
    paths["/v1/webhooks/deliveries"] = {
        "get": _operation(
            "This app's recent webhook requests, newest first",
            (200, _ref("Deliveries")),
            query=_DELIVERIES_QUERY,
        )
    }
    schemas.update(admin_schemas())
    paths.update(own_app_paths(_operation))
    paths.update(admin_paths(_problem_responses, _USAGE_QUERY))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tunnel Broker API", "version": __version__},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An app's API key"},
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An operator key (TB_ADMIN_KEYS)",
                },
            },
        },
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    return _document(server_url)

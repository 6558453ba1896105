"""The OpenAPI description of the admin API (``/admin/v1``, operator keys) and of an
app's own endpoints (``/v1/app``, ``/v1/trace``): the part of ``/openapi.json`` about
running the broker as a PaaS. Limits are described by ``AppLimits`` itself."""

from __future__ import annotations

from typing import Any

from tunnel_broker.admin.rotation import MAX_OVERLAP_SECONDS
from tunnel_broker.apps import APP_ID_PATTERN, AppLimits
from tunnel_broker.http.admin import MAX_AUDIT_PAGE

Schema = dict[str, Any]
Problems = Any  # ``openapi._problem_responses``


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required is not None:
        schema["required"] = required
    return schema


_STRING = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"anyOf": [_TIME, {"type": "null"}]}
_WEBHOOK_URL = {"type": "string", "pattern": r"^https?://[^\s]+$", "maxLength": 2048}
_WECHAT_APPID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_WECHAT_SECRET = {"type": "string", "minLength": 1, "maxLength": 256}


def admin_schemas() -> Schema:
    limits = AppLimits.model_json_schema(mode="validation")
    limits.pop("title", None)
    editable = {
        "webhook_url": _WEBHOOK_URL,
        "limits": _ref("AppLimits"),
        "trace_payloads": {"type": "boolean"},
        "allow_session_tunnels": {"type": "boolean"},
        "wechat_appid": {"anyOf": [_WECHAT_APPID, {"type": "null"}]},
        "wechat_secret": {"anyOf": [_WECHAT_SECRET, {"type": "null"}]},
    }
    key = _object(
        {"fingerprint": _STRING, "prefix": _STRING, "expires_at": _NULLABLE_TIME},
        ["fingerprint", "prefix", "expires_at"],
    )
    secret = _object({"fingerprint": _STRING, "expires_at": _NULLABLE_TIME}, ["fingerprint"])
    app_fields = {
        "id": _STRING,
        "webhook_url": _STRING,
        "api_keys": {"type": "array", "items": key},
        "webhook_secrets": {"type": "array", "items": secret},
        "limits": {"type": "object"},
        "trace_payloads": {"type": "boolean"},
        "allow_session_tunnels": {"type": "boolean"},
        "wechat_appid": {"anyOf": [_STRING, {"type": "null"}]},
        "wafer": {"type": "boolean"},
        "from_file": {"type": "boolean"},
    }
    return {
        "AppLimits": limits,
        "App": _object(app_fields, [k for k in app_fields if k != "from_file"]),
        "CreateApp": _object(
            {"id": {"type": "string", "pattern": APP_ID_PATTERN}, **editable},
            ["id", "webhook_url"],
            additionalProperties=False,
        ),
        "UpdateApp": _object(editable, additionalProperties=False),
        "Rotation": _object(
            {
                "overlap_seconds": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_OVERLAP_SECONDS,
                    "description": "How long the previous keys keep working (0: not at all)",
                }
            },
            additionalProperties=False,
        ),
        "AppCreated": _object(
            {"app": _ref("App"), "api_key": _STRING, "webhook_secret": _STRING},
            ["app", "api_key", "webhook_secret"],
        ),
        "ApiKeyRotated": _object({"api_key": _STRING, "app": _ref("App")}, ["api_key", "app"]),
        "WebhookSecretRotated": _object(
            {"webhook_secret": _STRING, "app": _ref("App")}, ["webhook_secret", "app"]
        ),
        "Pods": _object(
            {
                "pods": {
                    "type": "array",
                    "items": _object(
                        {
                            "node_id": _STRING,
                            "ready": {"type": "boolean"},
                            "tunnels": {"type": "integer", "minimum": 0},
                            "started_at": _TIME,
                            "last_seen": _TIME,
                            "version": _STRING,
                        },
                        ["node_id", "ready", "tunnels"],
                    ),
                },
                "redis": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            },
            ["pods", "redis"],
        ),
        "Audit": _object(
            {
                "entries": {
                    "type": "array",
                    "items": _object(
                        {
                            "at": _TIME,
                            "operator": _STRING,
                            "action": _STRING,
                            "app_id": _STRING,
                            "changes": {"type": "array", "items": _STRING},
                        },
                        ["at", "operator", "action", "app_id", "changes"],
                    ),
                }
            },
            ["entries"],
        ),
    }


_APP_ID_PARAM = {
    "name": "app_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": APP_ID_PATTERN},
}


def _admin(
    problems: Problems,
    summary: str,
    ok: tuple[int, Schema | None],
    body: str | None = None,
    app_id: bool = False,
    errors: tuple[int, ...] = (),
    query: list[Schema] | None = None,
) -> Schema:
    status, schema = ok
    answer: Schema = {"description": "OK"}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    statuses = {401, 404, 503, *errors}  # 404: the admin API is off, or no such app
    if body:
        statuses |= {400, 413, 415, 422}
    if query:
        statuses.add(422)
    op: Schema = {
        "summary": summary,
        "tags": ["admin"],
        "security": [{"adminKey": []}],
        "responses": {str(status): answer, **problems(*sorted(statuses))},
    }
    parameters = ([_APP_ID_PARAM] if app_id else []) + (query or [])
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {
            "required": body != "Rotation",
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def admin_paths(problems: Problems, usage_query: list[Schema]) -> Schema:
    p = problems
    usage = {"type": "object"}
    audit_query = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE},
        }
    ]
    app_query = [
        {"name": "app", "in": "query", "schema": {"type": "string", "pattern": APP_ID_PATTERN}}
    ]
    return {
        "/admin/v1/whoami": {
            "get": _admin(p, "The operator a key belongs to", (200, _object({"operator": _STRING})))
        },
        "/admin/v1/apps": {
            "get": _admin(p, "Every app", (200, _object({"apps": {"type": "array"}}))),
            "post": _admin(
                p, "Create an app", (201, _ref("AppCreated")), "CreateApp", errors=(409,)
            ),
        },
        "/admin/v1/apps/{app_id}": {
            "get": _admin(p, "One app", (200, _ref("App")), app_id=True),
            "patch": _admin(
                p, "Change an app", (200, _ref("App")), "UpdateApp", True, errors=(409,)
            ),
            "delete": _admin(p, "Delete an app", (204, None), app_id=True, errors=(409,)),
        },
        "/admin/v1/apps/{app_id}/api-keys": {
            "post": _admin(
                p,
                "Rotate an app's API key (the old keys work for the overlap)",
                (200, _ref("ApiKeyRotated")),
                "Rotation",
                True,
                errors=(409,),
            )
        },
        "/admin/v1/apps/{app_id}/webhook-secrets": {
            "post": _admin(
                p,
                "Rotate an app's webhook secret (both sign for the overlap)",
                (200, _ref("WebhookSecretRotated")),
                "Rotation",
                True,
                errors=(409,),
            )
        },
        "/admin/v1/usage": {
            "get": _admin(
                p, "Usage of every app (or ?app=)", (200, usage), query=usage_query + app_query
            )
        },
        "/admin/v1/usage.csv": {
            "get": {
                **_admin(
                    p, "Usage as CSV, for billing", (200, None), query=usage_query + app_query
                ),
                "responses": {
                    "200": {"description": "CSV", "content": {"text/csv": {"schema": _STRING}}},
                    **p(401, 404, 422, 503),
                },
            }
        },
        "/admin/v1/pods": {"get": _admin(p, "Pods and Redis health", (200, _ref("Pods")))},
        "/admin/v1/audit": {
            "get": _admin(p, "The audit log, newest first", (200, _ref("Audit")), query=audit_query)
        },
    }


def own_app_paths(operation: Any) -> Schema:
    """``/v1/app`` and ``/v1/trace``, built like the other ``/v1`` operations."""
    trace_query = [
        {"name": "tunnel_id", "in": "query", "schema": {"type": "string"}},
        {"name": "user_id", "in": "query", "schema": {"type": "string"}},
    ]
    trace = operation(
        "This app's live trace (server-sent events; see docs/api.md)", (200, {}), query=trace_query
    )
    trace["responses"]["200"] = {
        "description": "A stream of `data: <record JSON>` lines until the client leaves",
        "content": {"text/event-stream": {"schema": _STRING}},
    }
    return {
        "/v1/app": {
            "get": operation("This app's settings, keys as fingerprints", (200, _ref("App")))
        },
        "/v1/app/api-keys": {
            "post": operation(
                "Rotate this app's API key (the calling key works for the overlap)",
                (200, _ref("ApiKeyRotated")),
                "Rotation",
                errors=(409,),
            )
        },
        "/v1/trace": {"get": trace},
    }

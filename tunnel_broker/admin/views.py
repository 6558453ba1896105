"""How an app is shown to an operator or to itself: everything but its keys and secrets,
which appear as fingerprints (and a key's first characters, to recognise it by)."""

from __future__ import annotations

from typing import Any

from tunnel_broker.apps import App, fingerprint
from tunnel_broker.timestamps import iso_time

KEY_PREFIX_CHARS = 8


def _expiry(app: App, key: str) -> str | None:
    at = app.key_expires_at(key)
    return None if at is None else iso_time(at)


def app_view(app: App) -> dict[str, Any]:
    return {
        "id": app.id,
        "webhook_url": app.webhook_url,
        "api_keys": [
            {
                "fingerprint": fingerprint(key),
                "prefix": key[:KEY_PREFIX_CHARS],
                "expires_at": _expiry(app, key),
            }
            for key in app.api_keys
        ],
        "webhook_secrets": [
            {"fingerprint": fingerprint(secret), "expires_at": _expiry(app, secret)}
            for secret in app.webhook_secrets
        ],
        "limits": app.limits.model_dump(),
        "trace_payloads": app.trace_payloads,
        "allow_session_tunnels": app.allow_session_tunnels,
        "wechat_appid": app.wechat_appid,
        "wafer": app.wafer is not None,
    }

"""Apps (tenants): who may call the API, where their webhooks go, and their limits.

An app file (TOML or JSON) holds a list of apps with exactly the contract's field names.
Validation happens once, at load, with errors that name the app and the field but never
echo a key or secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunnel_broker.errors import AppsFileError
from tunnel_broker.validation import describe
from tunnel_broker.wafer.settings import WaferSettings
from tunnel_broker.webhooks.signing import InvalidSecret, decode_secret

__all__ = [
    "App",
    "AppLimits",
    "AppRegistry",
    "AppsFileError",
    "fingerprint",
    "load_apps_file",
    "new_api_key",
    "new_webhook_secret",
    "parse_apps",
]

MIN_API_KEY_LENGTH = 16
APP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def fingerprint(key: str) -> str:
    """How an API key or webhook secret is named where it must not be shown (admin API,
    audit log, console): 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def new_api_key() -> str:
    return "tbk_" + secrets.token_urlsafe(24)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class AppLimits(BaseModel):
    """Per-app limits; every one has a safe default so an app file may omit them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_message_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 128 * 1024
    messages_per_second: Annotated[float, Field(gt=0, le=100_000)] = 50.0
    message_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    max_tunnels_per_user: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    max_groups_per_tunnel: Annotated[int, Field(ge=0, le=10_000)] = 100
    # At most 4 KB: connect URLs must stay below the 8 KB request line of a handshake.
    max_token_claims_bytes: Annotated[int, Field(ge=256, le=4096)] = 4096
    max_tunnel_ttl_seconds: Annotated[int, Field(ge=10, le=30 * 86400)] = 86400
    default_tunnel_ttl_seconds: Annotated[int, Field(ge=10, le=30 * 86400)] = 3600
    api_requests_per_second: Annotated[float, Field(gt=0, le=1_000_000)] = 1000.0
    api_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    # Logins are unauthenticated: their own budget, per app and per client address.
    login_requests_per_second: Annotated[float, Field(gt=0, le=1_000_000)] = 100.0
    login_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    login_requests_per_second_per_client: Annotated[float, Field(gt=0, le=1_000_000)] = 5.0
    login_burst_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    webhook_buffer_events: Annotated[int, Field(ge=10, le=10_000_000)] = 50_000
    webhook_buffer_bytes: Annotated[int, Field(ge=64 * 1024, le=4 * 1024**3)] = 64 * 1024 * 1024
    webhook_batch_max_events: Annotated[int, Field(ge=1, le=10_000)] = 500
    webhook_batch_max_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    webhook_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    webhook_linger_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Durable events (Redis backend): undelivered events stored, all pods together.
    event_store_max_bytes: Annotated[int, Field(ge=1024 * 1024, le=64 * 1024**3)] = (
        256 * 1024 * 1024
    )
    # The reliable protocol: how long a dropped socket's tunnel waits for its client to
    # resume, and what it keeps for it meanwhile (pushes not yet acknowledged).
    resume_window_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    resume_buffer_messages: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    resume_buffer_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 1024 * 1024
    # Quotas, summed over all pods (none by default): concurrent tunnels of the app, and
    # messages (client messages relayed plus messages the business server sent, each once
    # whatever its fan-out) per calendar period in UTC. The app is warned (a header on its
    # API answers and webhook requests) once usage passes ``quota_warning_ratio``.
    max_tunnels: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    message_quota: Annotated[int, Field(ge=1, le=10**15)] | None = None
    message_quota_period: Literal["hour", "day", "month"] = "day"
    quota_warning_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    session_lifetime_seconds: Annotated[int, Field(ge=60, le=365 * 86400)] = 30 * 86400
    session_idle_seconds: Annotated[int, Field(ge=60, le=365 * 86400)] = 7 * 86400
    max_sessions_per_openid: Annotated[int, Field(ge=1, le=1000)] = 5

    @model_validator(mode="after")
    def _consistent(self) -> AppLimits:
        if self.default_tunnel_ttl_seconds > self.max_tunnel_ttl_seconds:
            raise ValueError(
                "default_tunnel_ttl_seconds must not exceed max_tunnel_ttl_seconds"
                " (every tunnel created without a ttl would be refused)"
            )
        return self


class App(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=APP_ID_PATTERN)]
    api_keys: Annotated[list[str], Field(min_length=1)]
    webhook_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)]
    webhook_secrets: Annotated[list[str], Field(min_length=1)]
    limits: AppLimits = AppLimits()
    # WeChat login (optional): the broker exchanges codes with these credentials, so
    # mini-programs never see the secret and business servers need not hold it.
    wechat_appid: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    wechat_secret: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    wechat_api_base_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] = (
        "https://api.weixin.qq.com"
    )
    # Whether a mini-program may open its own tunnel with its session (X-WX-Skey).
    allow_session_tunnels: bool = False
    # Wafer mode (optional): the legacy Wafer SDKs' tunnel service for this app.
    wafer: WaferSettings | None = None
    # Whether the live trace (console) may show message payloads (truncated, redacted).
    trace_payloads: bool = False
    # Keys and secrets on their way out after a rotation: ``fingerprint()`` of the API key
    # or webhook secret -> when (unix seconds) it stops being accepted (a key) or listed
    # in signatures (a secret). Until then old and new both work.
    retiring: dict[str, float] = {}

    @model_validator(mode="after")
    def _wechat_pair(self) -> App:
        if (self.wechat_appid is None) != (self.wechat_secret is None):
            raise ValueError("wechat_appid and wechat_secret go together")
        return self

    @field_validator("wechat_api_base_url")
    @classmethod
    def _wechat_over_tls(cls, url: str) -> str:
        # The app secret travels in the query string of every code exchange.
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and host not in _LOOPBACK_HOSTS:
            raise ValueError(
                "must be https:// (http:// only to a simulator on this machine): "
                "the app secret is sent with every login"
            )
        return url

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < MIN_API_KEY_LENGTH or any(c.isspace() for c in key):
                raise ValueError(
                    f"each API key needs at least {MIN_API_KEY_LENGTH} non-space characters"
                )
        return keys

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_well_formed(cls, secrets: list[str]) -> list[str]:
        for secret in secrets:
            try:
                decode_secret(secret)
            except InvalidSecret as exc:
                raise ValueError(str(exc)) from None
        return secrets

    @model_validator(mode="after")
    def _keeps_a_key(self) -> App:
        if all(fingerprint(key) in self.retiring for key in self.api_keys):
            raise ValueError("at least one API key must not be retiring")
        if all(fingerprint(secret) in self.retiring for secret in self.webhook_secrets):
            raise ValueError("at least one webhook secret must not be retiring")
        return self

    def key_expires_at(self, key: str) -> float | None:
        """When an API key or webhook secret of this app stops working (None: never)."""
        return self.retiring.get(fingerprint(key)) if self.retiring else None

    def signing_secrets(self, now: float) -> list[str]:
        """The webhook secrets to sign with now: every secret not yet retired."""
        if not self.retiring:
            return self.webhook_secrets
        return [s for s in self.webhook_secrets if self.retiring.get(fingerprint(s), now + 1) > now]

    def __repr__(self) -> str:
        return f"App(id={self.id!r}, webhook_url={self.webhook_url!r})"

    __str__ = __repr__


def parse_apps(raw: Any, source: str = "apps") -> list[App]:
    """Validate a decoded apps document: a list, or ``{"apps": [...]}``."""
    if isinstance(raw, dict) and "apps" in raw:
        raw = raw["apps"]
    if not isinstance(raw, list):
        raise AppsFileError(f"{source}: expected a list of apps (or a table 'apps')")
    apps: list[App] = []
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for index, item in enumerate(raw):
        label = item.get("id", f"#{index}") if isinstance(item, dict) else f"#{index}"
        try:
            app = App.model_validate(item)
        except ValidationError as exc:
            raise AppsFileError(f"{source}: app {label}: {describe(exc)}") from None
        if app.id in seen_ids:
            raise AppsFileError(f"{source}: app id {app.id!r} appears twice")
        for key in app.api_keys:
            if key in seen_keys:
                raise AppsFileError(f"{source}: app {app.id}: an API key is used by two apps")
            seen_keys.add(key)
        seen_ids.add(app.id)
        apps.append(app)
    return apps


def load_apps_file(path: str | Path) -> list[App]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AppsFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AppsFileError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}"
        ) from None
    return parse_apps(raw, str(path))


def _key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class AppRegistry:
    """The apps this process knows, indexed for API-key lookup.

    Keys are indexed by their SHA-256 so the dictionary lookup's timing says nothing
    about the key; the final comparison is constant-time.
    """

    def __init__(self, apps: Iterable[App] = ()) -> None:
        self._apps: dict[str, App] = {}
        self._by_key: dict[bytes, tuple[str, App]] = {}
        for app in apps:
            self.put(app)

    def put(self, app: App) -> None:
        self.remove(app.id)
        self._apps[app.id] = app
        for key in app.api_keys:
            self._by_key[_key_digest(key)] = (key, app)

    def replace_all(self, apps: Iterable[App]) -> None:
        fresh = {app.id: app for app in apps}
        for app_id in [a for a in self._apps if a not in fresh]:
            self.remove(app_id)
        for app in fresh.values():
            if self._apps.get(app.id) != app:
                self.put(app)

    def remove(self, app_id: str) -> None:
        old = self._apps.pop(app_id, None)
        if old is not None:
            for key in old.api_keys:
                self._by_key.pop(_key_digest(key), None)

    def get(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    def all(self) -> list[App]:
        return list(self._apps.values())

    def by_api_key(self, api_key: str) -> App | None:
        found = self._by_key.get(_key_digest(api_key))
        if found is None:
            return None
        key, app = found
        if not hmac.compare_digest(key.encode(), api_key.encode()):
            return None
        if app.retiring:
            expires = app.key_expires_at(key)
            if expires is not None and expires <= time.time():
                return None
        return app

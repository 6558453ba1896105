"""Broker settings: one dataclass, filled from flags and ``TB_*`` environment variables.

Every setting is listed in ``SETTINGS`` with its flag, environment variable, type,
default and meaning; the CLI, the docs' table of variables and the Helm chart's test are
all driven from that one list, so a name cannot exist in one place only.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal


class Secret:
    """A string that prints as stars, so settings can be logged whole."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TB_" + self.name.upper()


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    apps_file: str = ""
    backend: Literal["memory", "redis"] = "memory"
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    node_id: str = field(default_factory=_default_node_id)
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    idle_timeout: float = 600.0
    max_connection_seconds: float = 7200.0
    drain_seconds: float = 10.0
    shutdown_flush_seconds: float = 20.0
    connect_wait_seconds: float = 10.0
    max_api_body_bytes: int = 1024 * 1024
    webhook_retry_max_delay: float = 60.0
    sweep_interval: float = 5.0
    lease_seconds: float = 15.0
    keep_alive_timeout: float = 75.0

    def __post_init__(self) -> None:
        if not self.public_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            self.public_url = f"http://{host}:{self.port}"
        self.public_url = self.public_url.rstrip("/")

    @property
    def connect_base_url(self) -> str:
        """The public URL with a WebSocket scheme."""
        url = self.public_url
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        if url.startswith("http://"):
            return "ws://" + url[len("http://") :]
        return url

    def secret_keys(self) -> list[str]:
        """Token signing keys, oldest first (comma-separated in the setting)."""
        return [k.strip() for k in self.secret_key.reveal().split(",") if k.strip()]

    def with_generated_secret(self) -> Settings:
        """A single in-memory node may run without a configured secret: its tokens then
        die with the process, which is harmless since its tunnels do too."""
        if self.secret_keys():
            return self
        self.secret_key = Secret(secrets.token_urlsafe(32))
        return self


def _secret(value: str) -> Secret:
    return Secret(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "Interface to bind (default 127.0.0.1; 0.0.0.0 in containers)."),
    Setting("port", int, "TCP port for the API, WebSockets and operations endpoints."),
    Setting("public_url", str, "URL clients reach this broker at; connect URLs are built on it."),
    Setting("apps_file", str, "TOML or JSON file listing the apps (tenants)."),
    Setting("backend", str, "State backend: memory (one process) or redis.", ("memory", "redis")),
    Setting("redis_url", _secret, "Redis URL for the redis backend."),
    Setting("node_id", str, "This node's id in presence data and leases (default host-pid)."),
    Setting("secret_key", _secret, "Token signing key(s), comma-separated, newest last."),
    Setting(
        "log_level", str, "debug, info, warning or error.", ("debug", "info", "warning", "error")
    ),
    Setting(
        "log_format", str, "text (one line a record) or json (for log pipelines).", ("text", "json")
    ),
    Setting("ping_interval", float, "Seconds between protocol pings to each client."),
    Setting("ping_timeout", float, "Seconds to wait for a pong before dropping a socket."),
    Setting(
        "idle_timeout", float, "Close a tunnel with no messages for this many seconds (0: never)."
    ),
    Setting("max_connection_seconds", float, "Close tunnels open longer than this (0: never)."),
    Setting("drain_seconds", float, "On SIGTERM, wait this long for clients to leave before 1012."),
    Setting(
        "shutdown_flush_seconds", float, "On SIGTERM, time allowed to deliver pending webhooks."
    ),
    Setting("connect_wait_seconds", float, "How long a connect waits for webhook buffer room."),
    Setting("max_api_body_bytes", int, "Largest accepted HTTP API request body."),
    Setting("webhook_retry_max_delay", float, "Longest wait between webhook retries (seconds)."),
    Setting("sweep_interval", float, "Seconds between idle/lifetime checks of open tunnels."),
    Setting("lease_seconds", float, "Redis backend: a silent pod's tunnels are closed after this."),
    Setting(
        "keep_alive_timeout",
        float,
        "Seconds an idle HTTP keep-alive connection stays open (above the LB's idle timeout).",
    ),
)

_FIELD_NAMES = {f.name for f in fields(Settings)}
assert {s.name for s in SETTINGS} == _FIELD_NAMES, "SETTINGS and Settings disagree"


class SettingsError(ValueError):
    pass


def settings_from(values: Mapping[str, str | None], env: Mapping[str, str]) -> Settings:
    """Build settings; explicit ``values`` (flags) win over the environment."""
    kwargs: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = values.get(setting.name)
        source = setting.flag
        if raw is None:
            raw = env.get(setting.env)
            source = setting.env
        if raw is None:
            continue
        if setting.choices and raw not in setting.choices:
            raise SettingsError(f"{source}: expected one of {', '.join(setting.choices)}")
        try:
            kwargs[setting.name] = setting.type(raw)
        except ValueError:
            raise SettingsError(f"{source}: not a valid {setting.type.__name__}") from None
    return Settings(**kwargs)

"""Broker settings: one frozen dataclass, filled from flags and ``TB_*`` variables.

Each setting is declared once, as a field of ``Settings`` with its type, default and help;
``SETTINGS`` (flag, environment variable, parser) is derived from those fields, and the
CLI, the docs' table of variables and the Helm chart's test are all driven from it, so a
name cannot exist in one place only.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from tunnel_broker.errors import SettingsError


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


def default_handover_path(port: int) -> Path:
    """Per user (never a shared temporary directory: the file holds message contents),
    per port (brokers on one machine differ by port, a restart keeps it)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tunnel-broker" / f"undelivered-{port}.jsonl"


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Setting:
    """How one ``Settings`` field is set from outside: its flag, variable and help."""

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

    def from_env(self, env: Mapping[str, str]) -> Any | None:
        """This setting from ``env`` alone (for commands other than ``serve``)."""
        raw = env.get(self.env)
        return None if raw is None else self.parse(raw, self.env)

    def parse(self, raw: str, source: str) -> Any:
        if self.choices and raw not in self.choices:
            raise SettingsError(f"{source}: expected one of {', '.join(self.choices)}")
        try:
            return self.type(raw)
        except ValueError:
            raise SettingsError(f"{source}: not a valid {self.type.__name__}") from None


def _secret(value: str) -> Secret:
    return Secret(value)


def setting(
    default: Any = None,
    *,
    help: str,
    choices: tuple[str, ...] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A ``Settings`` field together with what the CLI, the environment and the docs say
    of it: the one place a setting is declared."""
    metadata = {"help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The broker's settings; frozen: a running node never sees them change."""

    host: str = setting(
        "127.0.0.1", help="Interface to bind (default 127.0.0.1; 0.0.0.0 in containers)."
    )
    port: int = setting(8080, help="TCP port for the API, WebSockets and operations endpoints.")
    public_url: str = setting(
        "", help="URL clients reach this broker at; connect URLs are built on it."
    )
    apps_file: str = setting("", help="TOML or JSON file listing the apps (tenants).")
    backend: Literal["memory", "redis"] = setting(
        "memory",
        help="State backend: memory (one process) or redis.",
        choices=("memory", "redis"),
    )
    redis_topology: Literal["standalone", "sentinel", "cluster"] = setting(
        "standalone",
        help="How Redis runs: standalone (redis_url), sentinel (redis_sentinels) or cluster.",
        choices=("standalone", "sentinel", "cluster"),
    )
    redis_url: Secret = setting(
        factory=lambda: Secret("redis://127.0.0.1:6379/0"),
        help=(
            "Redis URL: the server (standalone), a seed node (cluster), or with sentinel the"
            " master's credentials, database and TLS (rediss://; its host is not used)."
        ),
    )
    redis_sentinels: str = setting(
        "", help="Sentinel addresses, host:port comma-separated (redis_topology sentinel)."
    )
    redis_sentinel_master: str = setting(
        "mymaster", help="Name of the master the sentinels monitor."
    )
    redis_sentinel_username: str = setting(
        "", help="User the sentinels require, if they use ACLs (usually none)."
    )
    redis_sentinel_password: Secret = setting(
        factory=lambda: Secret(""),
        help="Password the sentinels themselves require (often none, or the master's).",
    )
    redis_sentinel_tls: bool = setting(False, help="Speak TLS to the sentinels.")
    redis_cluster_nodes: str = setting(
        "",
        help="More cluster seed nodes, host:port comma-separated, tried when redis_url's is down.",
    )
    node_id: str = setting(
        factory=_default_node_id,
        help="This node's id in presence data and leases (default host-pid).",
    )
    secret_key: Secret = setting(
        factory=lambda: Secret(""),
        help="Token signing key(s), comma-separated, newest last.",
    )
    log_level: str = setting(
        "info", help="debug, info, warning or error.", choices=("debug", "info", "warning", "error")
    )
    log_format: Literal["text", "json"] = setting(
        "text",
        help="text (one line a record) or json (for log pipelines).",
        choices=("text", "json"),
    )
    ping_interval: float = setting(20.0, help="Seconds between protocol pings to each client.")
    ping_timeout: float = setting(20.0, help="Seconds to wait for a pong before dropping a socket.")
    idle_timeout: float = setting(
        600.0, help="Close a tunnel with no messages for this many seconds (0: never)."
    )
    max_connection_seconds: float = setting(
        7200.0, help="Close tunnels open longer than this (0: never)."
    )
    drain_seconds: float = setting(
        10.0, help="On SIGTERM, wait this long for clients to leave before 1012."
    )
    shutdown_flush_seconds: float = setting(
        20.0, help="On SIGTERM, time allowed to deliver pending webhooks."
    )
    handover_file: str = setting(
        "auto",
        help=(
            "Memory backend: file keeping webhook events undelivered at exit for the next "
            "process (auto: $XDG_STATE_HOME/tunnel-broker/undelivered-PORT.jsonl; empty: off)."
        ),
    )
    connect_wait_seconds: float = setting(
        10.0, help="How long a connect waits for webhook buffer room."
    )
    max_api_body_bytes: int = setting(1024 * 1024, help="Largest accepted HTTP API request body.")
    webhook_retry_max_delay: float = setting(
        60.0, help="Longest wait between webhook retries (seconds)."
    )
    sweep_interval: float = setting(
        5.0, help="Seconds between idle/lifetime checks of open tunnels."
    )
    lease_seconds: float = setting(
        15.0, help="Redis backend: a silent pod's tunnels are closed after this."
    )
    durable_events: bool = setting(
        True,
        help=(
            "Redis backend: keep each webhook event not delivered within 5 ms in Redis, so "
            "that it survives the death of its pod (false: kept only at a clean stop)."
        ),
    )
    max_connections: int = setting(
        100_000,
        help="Open connections (tunnels included) above which new ones get 503 and are closed.",
    )
    header_timeout: float = setting(
        10.0, help="Seconds a client may take to send a complete request head (408 after)."
    )
    max_header_bytes: int = setting(
        16 * 1024, help="Largest request head (header lines) accepted; 431 above."
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1",
        help="Proxies (comma-separated, or *) trusted for client addresses (X-Forwarded-For).",
    )
    admin_keys: Secret = setting(
        factory=lambda: Secret(""),
        help=(
            "Operator keys for the admin API and console: name:key pairs, comma-separated"
            " (keys of 32+ characters; several during a rotation). Empty: admin API off."
        ),
    )
    usage_retention_days: int = setting(
        35, help="Days of hourly usage buckets kept per app (billing needs the last month)."
    )
    usage_flush_seconds: float = setting(
        1.0, help="Seconds between writes of this node's usage counts to the usage store."
    )
    usage_metering: bool = setting(
        True,
        help=(
            "Write usage counts to the usage store (false: usage stays empty; the per-app"
            " counters behind metrics still count). For measuring the meter's cost."
        ),
    )
    console: bool = setting(True, help="Serve the web console at /console.")
    keep_alive_timeout: float = setting(
        75.0,
        help="Seconds an idle HTTP keep-alive connection stays open (above the LB's idle timeout).",
    )

    def __post_init__(self) -> None:
        public_url = self.public_url
        if not public_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            public_url = f"http://{host}:{self.port}"
        object.__setattr__(self, "public_url", public_url.rstrip("/"))

    @property
    def connect_base_url(self) -> str:
        """The public URL with a WebSocket scheme."""
        url = self.public_url
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        if url.startswith("http://"):
            return "ws://" + url[len("http://") :]
        return url

    def handover_path(self) -> Path | None:
        """Where the memory backend keeps undelivered events across a restart, if anywhere."""
        if not self.handover_file:
            return None
        if self.handover_file == "auto":
            return default_handover_path(self.port)
        return Path(self.handover_file)

    def secret_keys(self) -> list[str]:
        """Token signing keys, oldest first (comma-separated in the setting)."""
        return [k.strip() for k in self.secret_key.reveal().split(",") if k.strip()]

    def with_secret_key(self, key: str) -> Settings:
        return dataclasses.replace(self, secret_key=Secret(key))

    def with_generated_secret(self) -> Settings:
        """A single in-memory node may run without a configured secret: its tokens then
        die with the process, which is harmless since its tunnels do too."""
        if self.secret_keys():
            return self
        return self.with_secret_key(secrets.token_urlsafe(32))


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


_boolean.__name__ = "boolean (true or false)"


def _parser(annotation: Any) -> Callable[[str], Any]:
    if annotation is Secret:
        return _secret
    if annotation is bool:
        return _boolean
    if typing.get_origin(annotation) is Literal:
        return str  # the choices are checked before parsing
    assert annotation in (str, int, float), f"no parser for settings of type {annotation}"
    return cast(Callable[[str], Any], annotation)


_HINTS = typing.get_type_hints(Settings)

SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, _parser(_HINTS[f.name]), f.metadata["help"], f.metadata["choices"])
    for f in fields(Settings)
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def settings_from(values: Mapping[str, str | None], env: Mapping[str, str]) -> Settings:
    """Build settings; explicit ``values`` (flags) win over the environment."""
    kwargs: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = values.get(spec.name)
        if raw is not None:
            kwargs[spec.name] = spec.parse(raw, spec.flag)
            continue
        value = spec.from_env(env)
        if value is not None:
            kwargs[spec.name] = value
    return Settings(**kwargs)

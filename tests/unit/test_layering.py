"""The package's shape: imports only go downward, modules stay small, and the top level
holds only entry points and the modules every room shares.

Layers, lowest first. A module may import modules of its own layer or of lower layers,
never of a higher one (function-level imports count too). A module that is in no layer
fails the test: a new module must be placed deliberately (docs/design.md says where).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tunnel_broker"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "errors",
            "timestamps",
            "targets",
            "ratelimit",
            "backoff",
            "validation",
            "logs",
            "metrics",
            "config",
        ),
    ),
    (
        "pure parts",
        (
            "shapes",
            "apps",
            "wechat",
            "tunnels",
            "tunnels.closecodes",
            "tunnels.tokens",
            "tunnels.writer",
            "tunnels.frames",
            "tunnels.handshake",
            "tunnels.protocol",
            "tunnels.reliable",
            "tunnels.resume",
            "webhooks",
            "webhooks.signing",
            "webhooks.events",
            "webhooks.batching",
            "webhooks.http_client",
            "webhooks.handover",
            "backend.sessions",
            "backend.redis.keys",
            "backend.redis.scripts",
            "backend.redis.messages",
            "backend.redis.health",
            "wafer",
            "wafer.envelope",
            "wafer.packets",
            "wafer.settings",
            "wafer.events",
            "usage",
            "usage.counters",
            "usage.periods",
            "usage.pushes",
            "usage.buckets",
            "usage.window",
            "usage.store",
            "usage.report",
            "usage.deliveries",
            "admin",
            "admin.operators",
            "admin.audit",
            "admin.rotation",
            "admin.views",
            "trace",
            "trace.records",
            "trace.tracer",
        ),
    ),
    (
        "local state",
        (
            "tunnels.shared",
            "tunnels.tunnel",
            "tunnels.reliable_tunnel",
            "tunnels.hub",
            "tunnels.reader",
            "webhooks.sender",
            "webhooks.store",
            "webhooks.delivery",
            "wafer.sender",
            "usage.meter",
        ),
    ),
    (
        "backends",
        (
            "backend",
            "usage.redis_store",
            "usage.redis_deliveries",
            "usage.metering",
            "trace.redis_relay",
        ),
    ),
    ("actions", ("webhooks.actions",)),
    ("node", ("node", "admin.store", "admin.pods")),
    ("surfaces", ("tunnels.connect", "tunnels.wafer_connect", "http", "console")),
    ("entry points", ("server", "cli", "wafer_cli", "__main__")),
]

TOP_LEVEL = {
    # entry points and wiring
    "__init__",
    "__main__",
    "cli",
    "wafer_cli",
    "server",
    "node",
    # what every room shares
    "apps",
    "backoff",
    "config",
    "errors",
    "logs",
    "metrics",
    "ratelimit",
    "shapes",
    "targets",
    "timestamps",
    "validation",
}

MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The package-relative names of the package modules ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if not node.module.startswith("tunnel_broker"):
                continue
            base = node.module.removeprefix("tunnel_broker").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if _is_module(candidate) else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tunnel_broker."):
                    found.add(alias.name.removeprefix("tunnel_broker."))
    found.discard("")
    return found


def _layer_of(name: str) -> int | None:
    """The layer of the longest prefix of ``name`` that a layer lists."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = name == prefix or name.startswith(prefix + ".")
            if covers and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for p in PACKAGE.rglob("*.py")
        # The WeChat simulator is a development tool of its own, not part of the broker.
        if "simulator" not in p.parts
    }


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in _modules() if name and _layer_of(name) is None)
    assert not unplaced, f"place these modules in a layer: {unplaced}"


def test_imports_only_go_downward() -> None:
    violations = []
    for name, path in sorted(_modules().items()):
        own = _layer_of(name or "__init__")
        if own is None:
            continue
        for imported in sorted(_imports(path)):
            theirs = _layer_of(imported)
            if theirs is not None and theirs > own:
                violations.append(
                    f"{name} ({LAYERS[own][0]}) imports {imported} ({LAYERS[theirs][0]})"
                )
    assert not violations, "\n".join(violations)


def test_the_layering_test_sees_upward_imports() -> None:
    assert "node" in _imports(PACKAGE / "tunnels" / "connect.py")
    assert _layer_of("tunnels.connect") > _layer_of("node")  # type: ignore[operator]
    assert _layer_of("backend.redis.backend") == _layer_of("backend")
    assert _layer_of("tunnels.closecodes") < _layer_of("tunnels.hub")  # type: ignore[operator]


def test_top_level_holds_only_entry_points_and_shared_modules() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL


def test_no_module_is_over_the_size_limit() -> None:
    too_long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these modules: {too_long}"

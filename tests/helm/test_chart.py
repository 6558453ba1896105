"""The Helm chart renders what the broker needs: real setting names, matching ports,
the broker's probe paths, secrets from Secrets, a grace period longer than the drain, and
no cluster without Redis. Every check runs the real ``helm`` on the chart."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.promql import exported_series, metric_names
from tests.helm.rendering import CHART, CI_VALUES, PRODUCTION_VALUES, Helm, Rendered, helm_binary
from tests.support.broker import app_config, new_secret
from tunnel_broker.apps import App, parse_apps
from tunnel_broker.config import SETTINGS, Settings, settings_from
from tunnel_broker.http.app import ROUTES as routes

SETTING_ENVS = {s.env for s in SETTINGS}
# Settings the chart derives itself rather than taking from `config`.
CHART_MANAGED = {
    "host",
    "port",
    "public_url",
    "backend",
    "redis_url",
    "secret_key",
    "apps_file",
    "node_id",
    # The `redis` block: topology, sentinels, cluster seeds (test_topologies.py).
    "redis_topology",
    "redis_sentinels",
    "redis_sentinel_master",
    "redis_sentinel_username",
    "redis_sentinel_password",
    "redis_sentinel_tls",
    "redis_cluster_nodes",
    # The `admin`, `usage` and `console` blocks (test_admin.py).
    "admin_keys",
    "usage_retention_days",
    "usage_flush_seconds",
    "usage_metering",
    "console",
}
# What a pod must be told; the rest has broker defaults.
ESSENTIAL_ENVS = {
    "TB_HOST",
    "TB_PORT",
    "TB_PUBLIC_URL",
    "TB_BACKEND",
    "TB_NODE_ID",
    "TB_DRAIN_SECONDS",
    "TB_SHUTDOWN_FLUSH_SECONDS",
    "TB_LEASE_SECONDS",
    "TB_LOG_LEVEL",
}
PRODUCTION = ("-f", str(PRODUCTION_VALUES))
WITH_REDIS = ("--set", "redis.url=redis://redis:6379/0")


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def default(helm: Helm) -> Rendered:
    return helm.template()


@pytest.fixture(scope="module")
def production(helm: Helm) -> Rendered:
    return helm.template(*PRODUCTION, release="tunnel-broker")


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def chart_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def secret_data(rendered: Rendered) -> dict[str, str]:
    data = rendered.one("Secret")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


# ---- helm lint and template in CI -------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [(), *(("-f", str(path)) for path in CI_VALUES)],
    ids=["default", *(path.stem for path in CI_VALUES)],
)
def test_helm_lint_passes(helm: Helm, values: tuple[str, ...]) -> None:
    result = helm.lint(*values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_values_cover_every_redis_topology() -> None:
    assert {path.name for path in CI_VALUES} >= {
        "production-values.yaml",
        "sentinel-values.yaml",
        "cluster-values.yaml",
    }


def test_default_values_run_one_pod_on_the_memory_backend(default: Rendered) -> None:
    assert default.kinds() == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    }
    assert default.deployment["spec"]["replicas"] == 1
    assert default.config["TB_BACKEND"] == "memory"
    assert "TB_REDIS_URL" not in default.env()


def test_production_values_render_a_redis_cluster_behind_tls_ingress(
    production: Rendered,
) -> None:
    assert {"HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "PrometheusRule"} <= (
        production.kinds()
    )
    assert production.config["TB_BACKEND"] == "redis"
    assert production.config["TB_PUBLIC_URL"] == "https://tunnels.example.com"
    # The HPA owns the replica count (at least 3); the Deployment must not fight it.
    hpa = production.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == production.deployment["metadata"]["name"]
    assert "replicas" not in production.deployment["spec"]
    tls = production.one("Ingress")["spec"]["tls"]
    assert tls == [{"hosts": ["tunnels.example.com"], "secretName": "tunnels-example-com-tls"}]


def test_replicas_without_autoscaling_are_set_on_the_deployment(helm: Helm) -> None:
    rendered = helm.template(*WITH_REDIS, "--set", "replicaCount=3")
    assert rendered.deployment["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in rendered.kinds()


# ---- refusing a cluster without Redis ---------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [("--set", "replicaCount=3"), ("--set", "autoscaling.enabled=true")],
    ids=["replicas", "autoscaling"],
)
def test_chart_refuses_more_than_one_pod_without_redis(helm: Helm, values: tuple[str, ...]) -> None:
    assert "redis" in helm.template_fails(*values)
    lint = helm.lint(*values)
    assert lint.returncode != 0 and "redis" in lint.stdout
    # The template's own check, for installs that skip schema validation.
    message = helm.template_fails(*values, "--skip-schema-validation")
    assert "needs Redis: set redis.url or redis.existingSecret" in message
    helm.template(*values, *WITH_REDIS)
    helm.template(*values, "--set", "redis.existingSecret=redis-credentials")


def test_ingress_without_a_host_is_refused(helm: Helm) -> None:
    message = helm.template_fails("--set", "ingress.enabled=true", "--skip-schema-validation")
    assert "ingress.host" in message


@pytest.mark.parametrize(
    "values",
    [
        ("--set", "config.logLevel=loud"),
        ("--set", "config.noSuchSetting=1"),
        ("--set", "config.drainSeconds=-1"),
        ("--set", "replicas=3"),
        ("--set", "extraEnv[0].name=TB_PORT", "--set", "extraEnv[0].value=1"),
        ("--set-json", 'apps.items=[{"id":"x","api_keys":["short"]}]'),
        ("--set", "redis.url=http://redis:6379"),
    ],
    ids=["log-level", "unknown-setting", "negative", "typo", "tb-in-extra-env", "app", "url"],
)
def test_schema_rejects_values_the_broker_would_not_take(
    helm: Helm, values: tuple[str, ...]
) -> None:
    assert "values don't meet the specifications of the schema" in helm.template_fails(*values)


# ---- every setting the chart passes is a real broker setting ---------------------------


@pytest.mark.parametrize("which", ["default", *(path.stem for path in CI_VALUES)])
def test_every_variable_the_chart_sets_is_a_broker_setting(
    which: str, helm: Helm, default: Rendered
) -> None:
    rendered = (
        default if which == "default" else helm.template("-f", str(CHART / "ci" / f"{which}.yaml"))
    )
    names = rendered.broker_variables()
    assert names <= SETTING_ENVS, names - SETTING_ENVS
    assert names >= ESSENTIAL_ENVS
    assert set(rendered.config) <= SETTING_ENVS
    if which == "production-values":
        assert {"TB_REDIS_URL", "TB_SECRET_KEY", "TB_APPS_FILE", "TB_ADMIN_KEYS"} <= names


@pytest.mark.parametrize("which", ["default", "production"])
def test_the_broker_accepts_every_rendered_value(
    which: str, default: Rendered, production: Rendered
) -> None:
    rendered = default if which == "default" else production
    env = dict(rendered.config)
    for name, entry in rendered.env().items():
        if name.startswith("TB_"):
            env[name] = entry.get("value", "from-a-secret-or-the-pod")
    settings = settings_from({}, env)
    assert settings.host == "0.0.0.0"
    assert settings.port == rendered.container["ports"][0]["containerPort"]
    assert settings.backend == rendered.config["TB_BACKEND"]


def test_config_keys_are_exactly_the_broker_settings_the_chart_leaves_to_operators() -> None:
    config_schema = chart_schema()["properties"]["config"]
    assert config_schema["additionalProperties"] is False
    in_schema = {snake(k) for k in config_schema["properties"]}
    assert in_schema == {s.name for s in SETTINGS} - CHART_MANAGED
    assert {snake(k) for k in chart_values()["config"]} == in_schema


# Chart defaults that differ from the broker's on purpose: the broker's default hand-over
# file is under the user's home, which a container does not keep; the chart's is on a
# volume that survives container restarts.
CHART_DEFAULTS = {"handover_file": "/var/lib/tunnel-broker/undelivered.jsonl"}


def test_config_defaults_are_the_broker_defaults(default: Rendered) -> None:
    broker = Settings()
    for key, value in chart_values()["config"].items():
        expected = CHART_DEFAULTS.get(snake(key), getattr(broker, snake(key)))
        assert value == expected, key
    # Rendered as the broker parses them: 1048576, not Helm's float 1.048576e+06.
    assert default.config["TB_MAX_API_BODY_BYTES"] == "1048576"


def test_the_hand_over_file_is_on_a_writable_volume_of_its_own(default: Rendered) -> None:
    directory = str(Path(default.config["TB_HANDOVER_FILE"]).parent)
    container = default.pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert directory in mounts
    volumes = {v["name"]: v for v in default.pod["volumes"]}
    assert "emptyDir" in volumes[mounts[directory]]
    assert volumes[mounts[directory]]["emptyDir"].get("medium") != "Memory"


def test_fractional_and_large_settings_render_exactly(helm: Helm, tmp_path: Path) -> None:
    # From a values file Helm reads floats; from --set, strings ("2.5") and int64s.
    values = tmp_path / "values.yaml"
    values.write_text("config:\n  shutdownFlushSeconds: 7.5\n  maxApiBodyBytes: 16777216\n")
    rendered = helm.template("-f", str(values), "--set", "config.drainSeconds=2.5")
    assert rendered.config["TB_DRAIN_SECONDS"] == "2.5"
    assert rendered.config["TB_SHUTDOWN_FLUSH_SECONDS"] == "7.5"
    assert rendered.config["TB_MAX_API_BODY_BYTES"] == "16777216"
    settings = settings_from({}, rendered.config)
    assert settings.max_api_body_bytes == 16777216 and settings.drain_seconds == 2.5
    # 5 (preStop) + 3 (drain, rounded up) + 8 (flush) + 10 (broker's fixed waits) + 10
    assert rendered.pod["terminationGracePeriodSeconds"] == 36


def test_apps_schema_names_only_apps_file_fields_and_requires_the_required_ones() -> None:
    # Fields the broker adds later pass through to it (it validates the file at start);
    # the ones the schema names must be real, and the required ones required.
    items = chart_schema()["properties"]["apps"]["properties"]["items"]["items"]
    assert set(items["properties"]) <= set(App.model_fields)
    required = {name for name, f in App.model_fields.items() if f.is_required()}
    assert set(items["required"]) == required


def test_node_id_is_the_pod_name(default: Rendered) -> None:
    source = default.env()["TB_NODE_ID"]["valueFrom"]
    assert source == {"fieldRef": {"fieldPath": "metadata.name"}}


# ---- ports and probes -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "production", "port-9000"])
def test_ports_line_up_from_container_to_ingress_and_monitor(
    helm: Helm, which: str, default: Rendered, production: Rendered
) -> None:
    rendered = {
        "default": default,
        "production": production,
        "port-9000": helm.template(*PRODUCTION, "--set", "containerPort=9000"),
    }[which]
    (port,) = rendered.container["ports"]
    assert port["name"] == "http"
    assert str(port["containerPort"]) == rendered.config["TB_PORT"]
    service = rendered.one("Service")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= (
        rendered.deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert rendered.container[probe]["httpGet"]["port"] == "http"
    policy = rendered.one("NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    for ingress in rendered.all("Ingress"):
        for path in ingress["spec"]["rules"][0]["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    for monitor in rendered.all("ServiceMonitor"):
        assert monitor["spec"]["endpoints"][0]["port"] == service_port["name"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )


def test_probes_use_the_broker_health_endpoints(default: Rendered) -> None:
    broker_paths = {route.path for route in routes}
    container = default.container
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz", "/metrics"} <= broker_paths


# ---- shutdown ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [(), PRODUCTION, ("--set", "config.drainSeconds=90", "--set", "preStopSleepSeconds=15")],
    ids=["default", "production", "long-drain"],
)
def test_grace_period_outlasts_prestop_drain_and_flush(helm: Helm, values: tuple[str, ...]) -> None:
    rendered = helm.template(*values)
    sleep = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    drain = float(rendered.config["TB_DRAIN_SECONDS"])
    flush = float(rendered.config["TB_SHUTDOWN_FLUSH_SECONDS"])
    # The broker also waits up to 5 s for sockets to close and 5 s for uvicorn to stop.
    needed = int(sleep[1]) + drain + 5 + flush + 5
    assert rendered.pod["terminationGracePeriodSeconds"] >= needed + 5


# ---- security ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "production"])
def test_pod_is_non_root_read_only_and_bounded(
    which: str, default: Rendered, production: Rendered
) -> None:
    rendered = default if which == "default" else production
    pod_ctx = rendered.pod["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] > 0
    ctx = rendered.container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    resources = rendered.container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    assert rendered.pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in rendered.container["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable path


def test_credentials_given_as_values_go_to_the_secret_only(helm: Helm) -> None:
    key = "signing-key-0123456789abcdef"
    url = "redis://:hunter2-password@redis:6379/0"
    rendered = helm.template("--set", f"auth.secretKey={key}", "--set", f"redis.url={url}")
    assert secret_data(rendered) == {"secret-key": key, "redis-url": url}
    env = rendered.env()
    name = rendered.one("Secret")["metadata"]["name"]
    assert env["TB_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "secret-key"}
    assert env["TB_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "redis-url"}
    clear = yaml.safe_dump_all([d for d in rendered.docs if d["kind"] != "Secret"])
    assert key not in clear and "hunter2" not in clear


def test_existing_secrets_are_referenced_not_copied(production: Rendered) -> None:
    assert "Secret" not in production.kinds()
    env = production.env()
    assert env["TB_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunnel-broker-credentials",
        "key": "secret-key",
    }
    assert env["TB_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunnel-broker-credentials",
        "key": "redis-url",
    }
    assert env["TB_APPS_FILE"]["value"] == "/etc/tunnel-broker/apps/apps.toml"
    (apps_volume,) = [v for v in production.pod["volumes"] if v["name"] == "apps"]
    assert apps_volume["secret"]["secretName"] == "tunnel-broker-apps"


def test_apps_values_become_a_mounted_apps_file_the_broker_accepts(helm: Helm) -> None:
    apps = [app_config("chat", "https://biz.example.com/hook", new_secret(), messages_per_second=5)]
    rendered = helm.template("--set-json", f"apps.items={json.dumps(apps)}")
    env_path = Path(rendered.env()["TB_APPS_FILE"]["value"])
    (mount,) = [m for m in rendered.container["volumeMounts"] if m["name"] == "apps"]
    assert mount["readOnly"] is True and env_path.parent == Path(mount["mountPath"])
    (volume,) = [v for v in rendered.pod["volumes"] if v["name"] == "apps"]
    assert volume["secret"]["items"] == [{"key": env_path.name, "path": env_path.name}]
    text = secret_data(rendered)[env_path.name]
    (app,) = parse_apps(json.loads(text))
    assert app.id == "chat" and app.limits.messages_per_second == 5


def test_config_checksum_rolls_pods_when_settings_or_apps_change(helm: Helm) -> None:
    def checksums(*values: str) -> dict[str, str]:
        annotations = helm.template(*values).deployment["spec"]["template"]["metadata"]
        return {k: v for k, v in annotations["annotations"].items() if k.startswith("checksum/")}

    apps = json.dumps([app_config("chat", "https://biz.example.com/hook", new_secret())])
    base = checksums("--set-json", f"apps.items={apps}")
    assert set(base) == {"checksum/config", "checksum/secret"}
    assert checksums("--set-json", f"apps.items={apps}") == base
    louder = checksums("--set-json", f"apps.items={apps}", "--set", "config.logLevel=debug")
    assert louder["checksum/config"] != base["checksum/config"]
    other = json.dumps([app_config("chat", "https://biz.example.com/hook", new_secret())])
    rotated = checksums("--set-json", f"apps.items={other}")
    assert rotated["checksum/secret"] != base["checksum/secret"]


# ---- ingress, monitoring, docs ----------------------------------------------------------


def test_ingress_keeps_websockets_open_and_exposes_only_the_api(production: Rendered) -> None:
    ingress = production.one("Ingress")
    annotations = ingress["metadata"]["annotations"]
    ping = float(production.config["TB_PING_INTERVAL"])
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 10 * ping
    paths = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == ["/v1"]  # /v1/connect and the API; /metrics stays inside
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_alert_rules_only_use_metrics_the_broker_exports(production: Rendered) -> None:
    # Real nodes' registries: whatever the broker exports, wired as the broker wires it.
    exported = exported_series()
    rules = production.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used and used <= exported, (rule["alert"], used - exported)


# Values documented as one object rather than key by key.
DOCUMENTED_WHOLE = {
    "ingress.annotations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "strategy",
    "autoscaling.behavior",
    "probes.startup",
    "probes.liveness",
    "probes.readiness",
}


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in DOCUMENTED_WHOLE:
            keys += leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    missing = [k for k in leaf_keys(chart_values()) if f"| `{k}` |" not in readme]
    assert not missing, missing

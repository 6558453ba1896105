"""The Grafana dashboard the chart ships: valid, stable (uid, title), querying only series
the broker exports, each filtered by the dashboard's variables; its ConfigMap for the
Grafana sidecar; and the alerts' links to it."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helm.promql import exported_families, exported_series, family_of, matchers, metric_names
from tests.helm.rendering import DASHBOARD, Helm, Rendered, helm_binary

UID = "tunnel-broker"
TITLE = "Tunnel Broker"
GRAFANA = "https://grafana.example.com"
# Series carrying an `app` label (all but these), which the $app variable must filter.
WITHOUT_APP = {"tb_ready", "tb_asyncio_tasks", "tb_api_requests", "tb_redis_healthy"}
WITHOUT_APP |= {"tb_redis_outages", "tb_redis_failovers"}
AGGREGATION = "(?:sum|min|max|avg|count)"


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row's
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"panel {p['title']!r}", t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(
                (
                    f"variable {variable['name']}",
                    query["query"] if isinstance(query, dict) else query,
                )
            )
    return found


def test_dashboard_is_valid_json_with_a_fixed_uid_and_title(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == UID
    assert dashboard["title"] == TITLE
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_panels_query_the_chosen_data_source(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "pod", "app"} <= set(variables)
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_query_names_only_metrics_the_broker_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    for where, expr in queries(dashboard):
        used = metric_names(expr)
        assert used, f"{where}: no metric in {expr}"
        assert used <= exported, f"{where}: {sorted(used - exported)} not exported"


def test_every_metric_the_broker_exports_has_a_panel(dashboard: dict[str, Any]) -> None:
    used = {family_of(m) for _, expr in queries(dashboard) for m in metric_names(expr)}
    assert used == set(exported_families()), set(exported_families()) - used


def test_panels_follow_the_dashboard_variables(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            found = matchers(expr)
            # One matcher set per selected metric, each narrowed to the chosen pods.
            assert len(found) == len(re.findall(r"\btb_\w+\{", expr)), expr
            for selector, metric in zip(found, re.findall(r"\b(tb_\w+)\{", expr), strict=True):
                for variable in ("namespace", "job", "pod"):
                    assert f'{variable}=~"${variable}"' in selector, (panel["title"], expr)
                if family_of(metric) not in WITHOUT_APP:
                    assert 'app=~"$app"' in selector, (panel["title"], expr)


def test_latency_quantiles_come_from_the_histogram_buckets(dashboard: dict[str, Any]) -> None:
    quantiles = {}
    for _, expr in queries(dashboard):
        match = re.match(r"histogram_quantile\((0\.\d+),", expr)
        if match:
            quantiles[expr] = match.group(1)
    assert {"0.5", "0.95", "0.99"} <= set(quantiles.values())
    for expr in quantiles:
        assert "_bucket{" in expr and re.search(r"by \([^)]*\ble\b", expr), expr


def test_the_panels_an_operator_needs_are_there(dashboard: dict[str, Any]) -> None:
    used = {m for _, expr in queries(dashboard) for m in metric_names(expr)}
    assert {
        "tb_tunnels_open",
        "tb_connects_total",
        "tb_tunnel_closes_total",
        "tb_messages_in_total",
        "tb_messages_out_total",
        "tb_webhook_latency_seconds_bucket",
        "tb_webhook_requests_total",
        "tb_webhook_retries_total",
        "tb_webhook_bad_replies_total",
        "tb_webhook_buffer_events",
        "tb_webhook_events_parked",
        "tb_events_stored_bytes",
        "tb_api_requests_total",
        "tb_ready",
        "tb_backpressure",
        "tb_redis_healthy",
        "tb_redis_outages_total",
        "tb_redis_failovers_total",
    } <= used


# ---- the ConfigMap ----------------------------------------------------------------------


def dashboard_maps(rendered: Rendered) -> list[dict[str, Any]]:
    return [d for d in rendered.all("ConfigMap") if "tunnel-broker.json" in d.get("data", {})]


def test_no_dashboard_by_default(helm: Helm) -> None:
    assert dashboard_maps(helm.template()) == []


def test_dashboard_config_map_carries_the_sidecar_label(helm: Helm) -> None:
    rendered = helm.template("--set", "grafana.dashboards.enabled=true")
    (config_map,) = dashboard_maps(rendered)
    assert config_map["metadata"]["namespace"] == "tunnels"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in config_map["metadata"]
    assert json.loads(config_map["data"]["tunnel-broker.json"]) == json.loads(DASHBOARD.read_text())
    # The broker's own ConfigMap is untouched and still the one the pods read.
    assert rendered.config["TB_BACKEND"] == "memory"
    assert (
        config_map["metadata"]["name"] != rendered.container["envFrom"][0]["configMapRef"]["name"]
    )


def test_dashboard_label_namespace_and_folder_are_configurable(helm: Helm) -> None:
    rendered = helm.template(
        "--set",
        "grafana.dashboards.enabled=true",
        "--set",
        "grafana.dashboards.label=example.com/dashboard",
        "--set",
        "grafana.dashboards.labelValue=tunnels",
        "--set",
        "grafana.dashboards.namespace=monitoring",
        "--set",
        "grafana.dashboards.folder=Messaging",
        "--set",
        "grafana.dashboards.folderAnnotation=k8s-sidecar-target-directory",
    )
    (config_map,) = dashboard_maps(rendered)
    metadata = config_map["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["example.com/dashboard"] == "tunnels"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"k8s-sidecar-target-directory": "Messaging"}


# ---- alerts link to it ------------------------------------------------------------------


def alert_rules(rendered: Rendered) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendered.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    return rules


def test_alerts_carry_no_dashboard_link_without_a_grafana_url(helm: Helm) -> None:
    rendered = helm.template("--set", "prometheusRule.enabled=true")
    for rule in alert_rules(rendered):
        assert "dashboard_url" not in rule["annotations"], rule["alert"]


def test_alerts_link_to_the_dashboard_on_their_release(helm: Helm) -> None:
    rendered = helm.template(
        "--set", "prometheusRule.enabled=true", "--set", f"grafana.url={GRAFANA}/"
    )
    service = rendered.one("Service")["metadata"]["name"]
    for rule in alert_rules(rendered):
        url = urlsplit(rule["annotations"]["dashboard_url"])
        assert f"{url.scheme}://{url.netloc}" == GRAFANA
        assert url.path == f"/d/{UID}/tunnel-broker", rule["alert"]
        query = parse_qs(url.query)
        # The same namespace and job (the Service's name) the alert itself selects.
        assert query["var-namespace"] == ["tunnels"]
        assert query["var-job"] == [service]
        assert f'namespace="tunnels", job="{service}"' in rule["expr"]
        # Labels the link names must survive the alert's aggregations.
        kept = [
            {label.strip() for label in labels.split(",")}
            for labels in re.findall(rf"\b{AGGREGATION}\s+by\s*\(([^)]*)\)", rule["expr"])
        ]
        dropped_all = re.search(rf"\b{AGGREGATION}\s*\(", rule["expr"])
        for label in re.findall(r"\$labels\.(\w+)", rule["annotations"]["dashboard_url"]):
            assert not dropped_all and all(label in k for k in kept), (rule["alert"], label)
            assert query[f"var-{label}"] == [f"{{{{ $labels.{label} }}}}"]

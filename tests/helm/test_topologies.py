"""The chart's three Redis topologies (standalone, Sentinel, Cluster) reach the broker as
the broker reads them: each rendering is turned into the environment a pod would see
(ConfigMap, Secrets, env) and handed to the broker's own parsers, ``settings_from`` and
``RedisTopology.from_settings``, which must accept it and find the sentinels, master and
seed nodes the values named. Values the broker would refuse, the chart refuses first."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.rendering import CHART, Helm, Rendered, helm_binary
from tunnel_broker.backend.redis.topology import RedisTopology
from tunnel_broker.config import SETTINGS_BY_NAME, Settings, settings_from
from tunnel_broker.errors import SettingsError

SCHEMA_REFUSAL = "values don't meet the specifications of the schema"
SENTINEL_VALUES = CHART / "ci" / "sentinel-values.yaml"
CLUSTER_VALUES = CHART / "ci" / "cluster-values.yaml"
SIGNING_KEY = "operator-signing-key-0123456789"
# What the operator stored in the Secrets the ci/ files name (their comments say how).
OPERATOR_SECRETS = {
    "tunnel-broker-credentials": {
        "secret-key": SIGNING_KEY,
        "redis-url": "redis://:master-password@mymaster/0",
        "sentinel-password": "sentinel-password-42",
    }
}
CLUSTER_SECRETS = {
    "tunnel-broker-credentials": {
        "secret-key": SIGNING_KEY,
        "redis-url": "redis://:cluster-password@redis-cluster.redis.svc.cluster.local:6379",
    }
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


@dataclass
class Case:
    """Values for one topology, the Secrets the operator made, and what the broker must
    end up with."""

    values: dict[str, Any]
    kind: str
    url: str
    existing: dict[str, dict[str, str]] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = ""
    sentinel_tls: bool = False
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    # Credentials given as values: they must appear in the chart's Secret only.
    credentials: tuple[str, ...] = ()


BROKER_DEFAULT_URL = Settings().redis_url.reveal()

CASES = {
    "standalone-values": Case(
        {"redis": {"url": "redis://:standalone-pw@redis-master:6379/0"}, "replicaCount": 2},
        kind="standalone",
        url="redis://:standalone-pw@redis-master:6379/0",
        credentials=("standalone-pw",),
    ),
    "standalone-existing-secret": Case(
        {"redis": {"existingSecret": "redis-creds", "existingSecretKey": "url"}},
        kind="standalone",
        url="rediss://:managed-pw@primary.cache.example.com:6380/0",
        existing={"redis-creds": {"url": "rediss://:managed-pw@primary.cache.example.com:6380/0"}},
    ),
    "sentinel-values": Case(
        {
            "replicaCount": 3,
            "redis": {
                "topology": "sentinel",
                "url": "rediss://:master-pw@mymaster/2",
                "sentinel": {
                    "addresses": ["sentinel-0.sentinel:26379", "10.0.0.7:26380", "[fd00::7]:26379"],
                    "masterName": "tunnels-master",
                    "username": "sentinel-user",
                    "password": "sentinel-pw-secret",
                    "tls": True,
                },
            },
        },
        kind="sentinel",
        url="rediss://:master-pw@mymaster/2",
        sentinels=(("sentinel-0.sentinel", 26379), ("10.0.0.7", 26380), ("fd00::7", 26379)),
        master_name="tunnels-master",
        sentinel_username="sentinel-user",
        sentinel_password="sentinel-pw-secret",
        sentinel_tls=True,
        credentials=("master-pw", "sentinel-pw-secret"),
    ),
    "sentinel-without-url": Case(
        # Sentinels and a master without passwords: no URL needed; the broker's default
        # then says database 0, no credentials, no TLS (its host is not used).
        {
            "replicaCount": 2,
            "redis": {"topology": "sentinel", "sentinel": {"addresses": ["s:26379"]}},
        },
        kind="sentinel",
        url=BROKER_DEFAULT_URL,
        sentinels=(("s", 26379),),
    ),
    "sentinel-existing-secret": Case(
        yaml.safe_load(SENTINEL_VALUES.read_text()),
        kind="sentinel",
        url="redis://:master-password@mymaster/0",
        existing=OPERATOR_SECRETS,
        sentinels=tuple(
            (f"redis-node-{i}.redis-headless.redis.svc.cluster.local", 26379) for i in range(3)
        ),
        sentinel_password="sentinel-password-42",
    ),
    "cluster-values": Case(
        {
            "autoscaling": {"enabled": True},
            "redis": {
                "topology": "cluster",
                "url": "rediss://default:cluster-pw@clustercfg.cache.example.com:6379",
                "cluster": {"nodes": ["shard-a.example.com:6379", "10.1.2.3:7000"]},
            },
        },
        kind="cluster",
        url="rediss://default:cluster-pw@clustercfg.cache.example.com:6379",
        cluster_nodes=(("shard-a.example.com", 6379), ("10.1.2.3", 7000)),
        credentials=("cluster-pw",),
    ),
    "cluster-existing-secret": Case(
        yaml.safe_load(CLUSTER_VALUES.read_text()),
        kind="cluster",
        url=CLUSTER_SECRETS["tunnel-broker-credentials"]["redis-url"],
        existing=CLUSTER_SECRETS,
        cluster_nodes=tuple(
            (f"redis-cluster-{i}.redis-cluster-headless.redis.svc.cluster.local", 6379)
            for i in range(3)
        ),
    ),
}


def render(helm: Helm, tmp_path: Path, values: dict[str, Any], *args: str) -> Rendered:
    # A values file, not --set: lists, booleans and IPv6 brackets arrive as an operator's
    # values file gives them.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return helm.template("-f", str(path), *args)


def broker_settings(rendered: Rendered, existing: dict[str, dict[str, str]]) -> Settings:
    return settings_from({}, rendered.pod_environment(existing))


@pytest.mark.parametrize("name", list(CASES))
def test_the_broker_reads_each_topology_as_the_values_say(
    helm: Helm, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    rendered = render(helm, tmp_path, case.values)
    settings = broker_settings(rendered, case.existing)
    assert settings.backend == "redis"
    assert settings.redis_topology == case.kind
    assert settings.redis_url.reveal() == case.url
    topology = RedisTopology.from_settings(settings)
    assert topology.kind == case.kind
    assert topology.sentinels == case.sentinels
    assert topology.cluster_nodes == case.cluster_nodes
    if case.kind == "sentinel":
        assert topology.master_name == case.master_name
        assert settings.redis_sentinel_username == case.sentinel_username
        assert settings.redis_sentinel_password.reveal() == case.sentinel_password
        assert settings.redis_sentinel_tls is case.sentinel_tls
    # Settings of another topology are not rendered at all (nothing misleading to read
    # in the ConfigMap).
    names = rendered.broker_variables()
    sentinel_names = {n for n in names if n.startswith("TB_REDIS_SENTINEL")}
    assert bool(sentinel_names) == (case.kind == "sentinel"), sentinel_names
    assert ("TB_REDIS_CLUSTER_NODES" in names) == bool(case.cluster_nodes)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].credentials])
def test_redis_credentials_given_as_values_go_to_the_secret_only(
    helm: Helm, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    rendered = render(helm, tmp_path, case.values)
    secret = rendered.one("Secret")
    held = json.dumps(rendered.pod_environment({}))
    clear = yaml.safe_dump_all([d for d in rendered.docs if d["kind"] != "Secret"])
    for credential in case.credentials:
        assert credential in held  # the pod gets it...
        assert credential not in clear  # ...from the Secret, not the ConfigMap or pod spec
    for variable in ("TB_REDIS_URL", "TB_REDIS_SENTINEL_PASSWORD"):
        if variable in rendered.env():
            ref = rendered.env()[variable]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
    assert not {"TB_REDIS_URL", "TB_REDIS_SENTINEL_PASSWORD"} & set(rendered.config)


@pytest.mark.parametrize("name", ["sentinel-existing-secret", "cluster-existing-secret"])
def test_existing_redis_secrets_are_referenced_not_copied(
    helm: Helm, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    rendered = render(helm, tmp_path, case.values)
    assert "Secret" not in rendered.kinds()
    env = rendered.env()
    assert env["TB_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunnel-broker-credentials",
        "key": "redis-url",
    }
    if case.kind == "sentinel":
        assert env["TB_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "tunnel-broker-credentials",
            "key": "sentinel-password",
        }
    else:
        assert "TB_REDIS_SENTINEL_PASSWORD" not in env


def test_a_sentinel_password_change_rolls_the_pods(helm: Helm, tmp_path: Path) -> None:
    values = CASES["sentinel-values"].values

    def checksum(password: str) -> str:
        redis = {
            **values["redis"],
            "sentinel": {**values["redis"]["sentinel"], "password": password},
        }
        annotations = render(helm, tmp_path, {**values, "redis": redis}).deployment["spec"][
            "template"
        ]["metadata"]["annotations"]
        return str(annotations["checksum/secret"])

    assert checksum("one-password") != checksum("another-password")


def test_without_a_sentinel_password_none_is_passed(helm: Helm, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, CASES["sentinel-without-url"].values)
    assert "TB_REDIS_SENTINEL_PASSWORD" not in rendered.env()
    assert "TB_REDIS_URL" not in rendered.env()
    assert "Secret" not in rendered.kinds()


def test_default_values_stay_on_the_memory_backend_with_no_redis_settings(
    helm: Helm, tmp_path: Path
) -> None:
    rendered = render(helm, tmp_path, {})
    assert rendered.config["TB_BACKEND"] == "memory"
    assert not {n for n in rendered.broker_variables() if n.startswith("TB_REDIS")}


# ---- refusals ---------------------------------------------------------------------------

SENTINEL: dict[str, Any] = {"topology": "sentinel", "sentinel": {"addresses": ["s:26379"]}}

REFUSED = {
    "unknown-topology": ({"redis": {"topology": "ha", "url": "redis://r:6379"}}, "redis.topology"),
    "sentinel-without-addresses": (
        {"redis": {"topology": "sentinel", "url": "redis://:pw@mymaster/0"}},
        "redis.sentinel.addresses",
    ),
    "address-without-port": (
        {"redis": {**SENTINEL, "sentinel": {"addresses": ["sentinel-0"]}}},
        "is not host:port",
    ),
    "port-out-of-range": (
        {"redis": {**SENTINEL, "sentinel": {"addresses": ["s:65536"]}}},
        "is not host:port",
    ),
    "comma-separated-string-in-list": (
        {"redis": {**SENTINEL, "sentinel": {"addresses": ["a:26379,b:26379"]}}},
        "is not host:port",
    ),
    "cluster-node-not-host-port": (
        {"redis": {"topology": "cluster", "url": "redis://c:6379", "cluster": {"nodes": ["c"]}}},
        "is not host:port",
    ),
    "cluster-without-url": ({"redis": {"topology": "cluster"}}, "redis.topology=cluster needs"),
    "cluster-database": (
        {"redis": {"topology": "cluster", "url": "redis://c:6379/3"}},
        "database 0 only",
    ),
    "sentinels-without-sentinel-topology": (
        {"redis": {"url": "redis://r:6379", "sentinel": {"addresses": ["s:26379"]}}},
        "set redis.topology=sentinel",
    ),
    "sentinel-password-without-sentinel-topology": (
        {"redis": {"url": "redis://r:6379", "sentinel": {"password": "pw"}}},
        "set redis.topology=sentinel",
    ),
    "cluster-nodes-without-cluster-topology": (
        {"redis": {"url": "redis://r:6379", "cluster": {"nodes": ["c:6379"]}}},
        "set redis.topology=cluster",
    ),
    "empty-master-name": (
        {"redis": {**SENTINEL, "sentinel": {**SENTINEL["sentinel"], "masterName": ""}}},
        "masterName",
    ),
    "three-pods-on-a-cluster-without-url": (
        {"replicaCount": 3, "redis": {"topology": "cluster"}},
        "redis",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_chart_refuses_redis_values_the_broker_would_not_take(
    helm: Helm, tmp_path: Path, name: str
) -> None:
    values, words = REFUSED[name]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    message = helm.template_fails("-f", str(path))
    # The schema or the template's own check; both name the value.
    assert SCHEMA_REFUSAL in message or words in message, message
    lint = helm.lint("-f", str(path))
    assert lint.returncode != 0
    # The template's own check, for installs that skip schema validation.
    message = helm.template_fails("-f", str(path), "--skip-schema-validation")
    assert words in message, message


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 3, "redis": SENTINEL},
        {"autoscaling": {"enabled": True}, "redis": SENTINEL},
        {"replicaCount": 3, "redis": {"topology": "cluster", "url": "redis://c:6379"}},
    ],
    ids=["sentinel-replicas", "sentinel-autoscaling", "cluster-replicas"],
)
def test_any_topology_gives_more_than_one_pod_its_redis(
    helm: Helm, tmp_path: Path, values: dict[str, Any]
) -> None:
    rendered = render(helm, tmp_path, values)
    assert rendered.config["TB_BACKEND"] == "redis"


# Addresses the chart must judge as the broker does: whatever the chart takes, the broker
# takes and reads as the same host and port; what the broker refuses, the chart refuses.
ADDRESSES = {
    "sentinel-0.sentinel.redis.svc.cluster.local:26379": (
        "sentinel-0.sentinel.redis.svc.cluster.local",
        26379,
    ),
    "10.0.0.1:1": ("10.0.0.1", 1),
    "[fd00::1]:65535": ("fd00::1", 65535),
    "redis_node:6379": ("redis_node", 6379),
    "s": None,
    "s:": None,
    ":26379": None,
    "s:0": None,
    "s:65536": None,
    "s:port": None,
    "s:-1": None,
}


def broker_reads(address: str) -> tuple[str, int] | None:
    settings = Settings(redis_topology="sentinel", redis_sentinels=address)
    try:
        (found,) = RedisTopology.from_settings(settings).sentinels
    except SettingsError:
        return None
    return found


@pytest.mark.parametrize("address", list(ADDRESSES))
def test_chart_and_broker_agree_on_what_an_address_is(
    helm: Helm, tmp_path: Path, address: str
) -> None:
    expected = ADDRESSES[address]
    assert broker_reads(address) == expected
    values = {"redis": {**SENTINEL, "sentinel": {"addresses": [address]}}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    schema = helm.run("template", "tb", str(CHART), "-f", str(path))
    template = helm.run("template", "tb", str(CHART), "-f", str(path), "--skip-schema-validation")
    assert (schema.returncode == 0) == (expected is not None), schema.stderr
    assert (template.returncode == 0) == (expected is not None), template.stderr
    if expected is not None:
        rendered = Rendered([d for d in yaml.safe_load_all(template.stdout) if d])
        topology = RedisTopology.from_settings(broker_settings(rendered, {}))
        assert topology.sentinels == (expected,)


def test_schema_and_template_use_the_same_address_pattern() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    redis = schema["properties"]["redis"]["properties"]
    sentinel = redis["sentinel"]["properties"]["addresses"]["items"]["pattern"]
    cluster = redis["cluster"]["properties"]["nodes"]["items"]["pattern"]
    assert sentinel == cluster
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    (template,) = re.findall(r"\$address := `([^`]*)`", helpers)
    assert template == sentinel


def test_topology_choices_and_defaults_are_the_brokers() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    choices = schema["properties"]["redis"]["properties"]["topology"]["enum"]
    assert tuple(choices) == SETTINGS_BY_NAME["redis_topology"].choices
    values = yaml.safe_load((CHART / "values.yaml").read_text())["redis"]
    broker = Settings()
    assert values["topology"] == broker.redis_topology
    assert values["sentinel"]["masterName"] == broker.redis_sentinel_master
    assert values["sentinel"]["tls"] is broker.redis_sentinel_tls
    assert values["sentinel"]["password"] == broker.redis_sentinel_password.reveal() == ""
    assert values["sentinel"]["username"] == broker.redis_sentinel_username == ""

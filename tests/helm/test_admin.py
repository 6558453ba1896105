"""The chart's operator keys (``admin``), usage metering (``usage``) and console
(``console``) reach the broker as the broker reads them: each rendering is turned into
the environment a pod would see (ConfigMap, Secrets, env) and handed to the broker's own
parsers, ``settings_from`` and ``OperatorKeys.parse``, which must find the operators the
values named. Operator keys the broker would refuse, the chart refuses first, without
ever printing a key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.rendering import CHART, PRODUCTION_VALUES, Helm, Rendered, helm_binary
from tunnel_broker.admin.operators import MIN_OPERATOR_KEY_LENGTH, OperatorKeys
from tunnel_broker.config import Settings, settings_from
from tunnel_broker.errors import SettingsError

SCHEMA_REFUSAL = "values don't meet the specifications of the schema"
# Operator keys as `openssl rand -base64 33` makes them, and one with a colon (the broker
# splits a pair at its first colon, so a key may hold more).
ALICE_KEY = "q3Vb8Jx0Zr5yTn2Wc7Lm4Hs9Dk1Pf6Ge+Ua/Ri0Ow3Ey="
CI_KEY = "ci:key:0123456789abcdefghijklmnopqrstuv"
BOB_KEY = "bob-" + "b" * 40
OPERATORS = [{"name": "alice", "key": ALICE_KEY}, {"name": "ci@example.com", "key": CI_KEY}]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    # A values file, not --set: keys with `,`, `=` or white space arrive as an operator's
    # values file gives them.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm: Helm, tmp_path: Path, values: dict[str, Any], *args: str) -> Rendered:
    return helm.template("-f", values_file(tmp_path, values), *args)


def broker_settings(rendered: Rendered, existing: dict[str, dict[str, str]]) -> Settings:
    return settings_from({}, rendered.pod_environment(existing))


def operators_of(rendered: Rendered, existing: dict[str, dict[str, str]]) -> OperatorKeys:
    return OperatorKeys.parse(broker_settings(rendered, existing).admin_keys.reveal())


def clear_text(rendered: Rendered) -> str:
    """Everything rendered but the Secrets."""
    return yaml.safe_dump_all([d for d in rendered.docs if d["kind"] != "Secret"])


# ---- operator keys reach the broker -----------------------------------------------------


def test_admin_keys_given_as_values_are_the_brokers_operators(helm: Helm, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, {"admin": {"keys": OPERATORS}})
    operators = operators_of(rendered, {})
    assert operators.enabled
    assert operators.operator(ALICE_KEY) == "alice"
    assert operators.operator(CI_KEY) == "ci@example.com"
    assert operators.operator(BOB_KEY) is None
    # In the chart's Secret as TB_ADMIN_KEYS says them, and nowhere else.
    secret = rendered.one("Secret")
    name = secret["metadata"]["name"]
    assert rendered.env()["TB_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": name,
        "key": "admin-keys",
    }
    assert rendered.pod_environment({})["TB_ADMIN_KEYS"] == (
        f"alice:{ALICE_KEY},ci@example.com:{CI_KEY}"
    )
    assert "TB_ADMIN_KEYS" not in rendered.config
    clear = clear_text(rendered)
    assert ALICE_KEY not in clear and CI_KEY not in clear


@pytest.mark.parametrize(
    ("admin", "ref"),
    [
        (
            {"existingSecret": "operator-keys"},
            {"name": "operator-keys", "key": "admin-keys"},
        ),
        (
            {"existingSecret": "operator-keys", "existingSecretKey": "operators"},
            {"name": "operator-keys", "key": "operators"},
        ),
        # The Secret wins over keys given as values, as for the other credentials.
        (
            {"existingSecret": "operator-keys", "keys": [{"name": "stale", "key": BOB_KEY}]},
            {"name": "operator-keys", "key": "admin-keys"},
        ),
    ],
    ids=["default-key", "own-key", "wins-over-keys"],
)
def test_an_existing_secret_of_admin_keys_is_referenced_not_copied(
    helm: Helm, tmp_path: Path, admin: dict[str, Any], ref: dict[str, str]
) -> None:
    rendered = render(helm, tmp_path, {"admin": admin})
    assert "Secret" not in rendered.kinds()
    assert BOB_KEY not in clear_text(rendered)
    assert rendered.env()["TB_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"] == ref
    existing = {ref["name"]: {ref["key"]: f"alice:{ALICE_KEY},bob:{BOB_KEY}"}}
    operators = operators_of(rendered, existing)
    assert operators.operator(ALICE_KEY) == "alice"
    assert operators.operator(BOB_KEY) == "bob"


def test_production_values_take_the_operator_keys_from_the_credentials_secret(
    helm: Helm,
) -> None:
    # What the operator stored, as the file's comment says.
    existing = {
        "tunnel-broker-credentials": {
            "secret-key": "operator-signing-key-0123456789",
            "redis-url": "rediss://:PASSWORD@redis.example.internal:6380/0",
            "admin-keys": f"ops:{ALICE_KEY}",
        }
    }
    rendered = helm.template("-f", str(PRODUCTION_VALUES), release="tunnel-broker")
    assert rendered.env()["TB_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "tunnel-broker-credentials",
        "key": "admin-keys",
    }
    assert operators_of(rendered, existing).operator(ALICE_KEY) == "ops"
    assert "--from-literal=admin-keys=" in PRODUCTION_VALUES.read_text()


@pytest.mark.parametrize(
    "admin",
    [{}, {"keys": []}, {"keys": [], "existingSecretKey": "operators"}],
    ids=["default", "empty-list", "key-without-secret"],
)
def test_without_admin_keys_the_admin_api_stays_off(
    helm: Helm, tmp_path: Path, admin: dict[str, Any]
) -> None:
    rendered = render(helm, tmp_path, {"admin": admin} if admin else {})
    assert "TB_ADMIN_KEYS" not in rendered.broker_variables()
    assert "Secret" not in rendered.kinds()
    assert not operators_of(rendered, {}).enabled


def test_an_operator_key_change_rolls_the_pods(helm: Helm, tmp_path: Path) -> None:
    def checksums(keys: list[dict[str, str]]) -> dict[str, str]:
        annotations = render(helm, tmp_path, {"admin": {"keys": keys}}).deployment["spec"][
            "template"
        ]["metadata"]["annotations"]
        return {k: v for k, v in annotations.items() if k.startswith("checksum/")}

    base = checksums([{"name": "alice", "key": ALICE_KEY}])
    assert checksums([{"name": "alice", "key": ALICE_KEY}]) == base
    # A rotation's steps: add a pair, then remove the old one. Each rolls the pods.
    added = checksums([{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}])
    assert added["checksum/secret"] != base["checksum/secret"]
    removed = checksums([{"name": "bob", "key": BOB_KEY}])
    assert removed["checksum/secret"] not in (base["checksum/secret"], added["checksum/secret"])
    assert added["checksum/config"] == removed["checksum/config"] == base["checksum/config"]


# ---- refusals ---------------------------------------------------------------------------

GOOD = {"name": "alice", "key": ALICE_KEY}
SHORT_KEY = "s" * (MIN_OPERATOR_KEY_LENGTH - 1)

# values, whether the schema can say it, words of the template's own message.
REFUSED: dict[str, tuple[dict[str, Any], bool, str]] = {
    "short-key": (
        {"admin": {"keys": [{"name": "alice", "key": SHORT_KEY}]}},
        True,
        "admin.keys[0] (alice): the key needs 32 or more characters",
    ),
    "bad-name": (
        {"admin": {"keys": [{"name": "alice smith", "key": ALICE_KEY}]}},
        True,
        'admin.keys[0].name: "alice smith" is not an operator name',
    ),
    "name-with-colon": (
        {"admin": {"keys": [GOOD, {"name": "ops:eu", "key": BOB_KEY}]}},
        True,
        'admin.keys[1].name: "ops:eu" is not an operator name',
    ),
    "empty-name": (
        {"admin": {"keys": [{"name": "", "key": ALICE_KEY}]}},
        True,
        'admin.keys[0].name: "" is not an operator name',
    ),
    "key-with-space": (
        {"admin": {"keys": [{"name": "alice", "key": ALICE_KEY[:20] + " " + ALICE_KEY[20:]}]}},
        True,
        "admin.keys[0] (alice): the key needs",
    ),
    "key-with-comma": (
        {"admin": {"keys": [{"name": "alice", "key": f"{ALICE_KEY},bob:{BOB_KEY}"}]}},
        True,
        "admin.keys[0] (alice): the key needs",
    ),
    "missing-key": (
        {"admin": {"keys": [{"name": "alice"}]}},
        True,
        "admin.keys[0] (alice): the key needs",
    ),
    "duplicate-name": (
        {"admin": {"keys": [GOOD, {"name": "alice", "key": BOB_KEY}]}},
        False,
        'admin.keys: operator name "alice" appears twice',
    ),
    "one-key-two-names": (
        {"admin": {"keys": [GOOD, {"name": "bob", "key": ALICE_KEY}]}},
        False,
        "admin.keys: alice and bob have the same key",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_chart_refuses_operator_keys_the_broker_would_not_take(
    helm: Helm, tmp_path: Path, name: str
) -> None:
    values, by_schema, words = REFUSED[name]
    path = values_file(tmp_path, values)
    message = helm.template_fails("-f", path)
    assert (SCHEMA_REFUSAL if by_schema else words) in message, message
    lint = helm.lint("-f", path)
    # helm lint reports a template's `fail` as [INFO] and passes: only what the schema
    # says fails it. helm template, install and upgrade refuse both.
    assert (lint.returncode != 0) == by_schema, lint.stdout + lint.stderr
    # The template's own check, for installs that skip schema validation.
    unchecked = helm.template_fails("-f", path, "--skip-schema-validation")
    assert words in unchecked, unchecked
    # Whoever reads the CI log learns which operator, never the key.
    for pair in values["admin"]["keys"]:
        if pair.get("key"):
            for key in pair["key"].split(","):
                assert key not in message + lint.stdout + lint.stderr + unchecked


# Keys and names the chart must judge as the broker does: what the chart takes, the
# broker takes and reads as the same operator; what the broker refuses (or would read as
# another operator), the chart refuses. White space is Python's (str.isspace), which is
# more than a regular expression's \s; the length is in characters, not bytes.
KEYS = {
    "ascii-32": "k" * 32,
    "ascii-31": "k" * 31,
    "accented-32": "é" * 32,
    "accented-31": "é" * 31,  # 62 bytes: long enough if bytes were counted
    "colons": "a:b:" * 8,
    "base64": ALICE_KEY,
    **{
        f"inner-{hex(ord(space))}": "k" * 16 + space + "k" * 16
        for space in "\t\n\v\f\r\x1c\x1f \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
    },
    "zero-width-space": "k" * 16 + "\u200b" + "k" * 16,  # not white space to Python
    "inner-comma": "k" * 32 + "," + "k" * 32,
}
NAMES = {
    "plain": "ops",
    "email": "ci@example.com",
    "punctuation": "team_a.b-c",
    "longest": "n" * 64,
    "too-long": "n" * 65,
    "colon": "ops:eu",
    "comma": "ops,eu",
    "slash": "ops/eu",
    "space": "ops eu",
    "accented": "opé",
}


def broker_reads(name: str, key: str) -> str | None:
    """The operator the broker finds for ``key`` given ``name:key``, or None if it
    refuses the pair."""
    try:
        return OperatorKeys.parse(f"{name}:{key}").operator(key)
    except SettingsError:
        return None


def chart_takes(helm: Helm, tmp_path: Path, name: str, key: str) -> tuple[bool, bool]:
    path = values_file(tmp_path, {"admin": {"keys": [{"name": name, "key": key}]}})
    schema = helm.run("template", "tb", str(CHART), "-f", path)
    template = helm.run("template", "tb", str(CHART), "-f", path, "--skip-schema-validation")
    if template.returncode == 0:
        # What it renders, the broker reads as this operator.
        rendered = Rendered([d for d in yaml.safe_load_all(template.stdout) if d])
        assert operators_of(rendered, {}).operator(key) == name
    return schema.returncode == 0, template.returncode == 0


@pytest.mark.parametrize("case", list(KEYS))
def test_chart_and_broker_agree_on_what_an_operator_key_is(
    helm: Helm, tmp_path: Path, case: str
) -> None:
    key = KEYS[case]
    taken = broker_reads("ops", key) == "ops"
    assert chart_takes(helm, tmp_path, "ops", key) == (taken, taken)


@pytest.mark.parametrize("case", list(NAMES))
def test_chart_and_broker_agree_on_what_an_operator_name_is(
    helm: Helm, tmp_path: Path, case: str
) -> None:
    name = NAMES[case]
    taken = broker_reads(name, ALICE_KEY) == name
    assert chart_takes(helm, tmp_path, name, ALICE_KEY) == (taken, taken)


def test_schema_and_template_use_the_same_operator_patterns() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    pair = schema["properties"]["admin"]["properties"]["keys"]["items"]["properties"]
    assert pair["key"]["minLength"] == MIN_OPERATOR_KEY_LENGTH
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    (name,) = re.findall(r"\$namePattern := `([^`]*)`", helpers)
    (key,) = re.findall(r"\$keyPattern := `([^`]*)`", helpers)
    assert name == pair["name"]["pattern"]
    assert key == pair["key"]["pattern"]
    assert f"{{{MIN_OPERATOR_KEY_LENGTH},}}" in key


# ---- usage and console ------------------------------------------------------------------


def test_usage_and_console_values_are_the_brokers_settings(helm: Helm, tmp_path: Path) -> None:
    values = {
        "usage": {"retentionDays": 400, "flushSeconds": 0.25, "metering": False},
        "console": {"enabled": False},
    }
    settings = broker_settings(render(helm, tmp_path, values), {})
    assert settings.usage_retention_days == 400
    assert settings.usage_flush_seconds == 0.25
    assert settings.usage_metering is False
    assert settings.console is False
    # From --set, Helm passes integers as int64 and fractions as strings.
    rendered = helm.template("--set", "usage.retentionDays=7", "--set", "usage.flushSeconds=2.5")
    settings = broker_settings(rendered, {})
    assert settings.usage_retention_days == 7 and settings.usage_flush_seconds == 2.5


def test_usage_and_console_defaults_are_the_brokers(helm: Helm) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    broker = Settings()
    assert values["usage"] == {
        "retentionDays": broker.usage_retention_days,
        "flushSeconds": broker.usage_flush_seconds,
        "metering": broker.usage_metering,
    }
    assert values["console"] == {"enabled": broker.console}
    settings = broker_settings(helm.template(), {})
    assert settings.usage_retention_days == broker.usage_retention_days
    assert settings.usage_flush_seconds == broker.usage_flush_seconds
    assert settings.usage_metering is broker.usage_metering
    assert settings.console is broker.console
    assert helm.template().config["TB_USAGE_RETENTION_DAYS"] == "35"


@pytest.mark.parametrize(
    "values",
    [
        {"usage": {"retentionDays": 0}},
        {"usage": {"retentionDays": 1.5}},
        {"usage": {"flushSeconds": 0}},
        {"usage": {"flushSeconds": "soon"}},
        {"usage": {"retentionDay": 30}},
        {"console": {"enabled": "yes"}},
        {"admin": {"key": ALICE_KEY}},
    ],
    ids=["no-retention", "fractional-days", "no-flush", "word", "typo", "console", "admin-typo"],
)
def test_schema_refuses_usage_console_and_admin_values_the_broker_would_not_take(
    helm: Helm, tmp_path: Path, values: dict[str, Any]
) -> None:
    assert SCHEMA_REFUSAL in helm.template_fails("-f", values_file(tmp_path, values))


# ---- NOTES.txt --------------------------------------------------------------------------


def test_notes_give_the_admin_api_and_console_urls_when_operators_are_set(
    helm: Helm, tmp_path: Path
) -> None:
    notes = helm.notes("-f", values_file(tmp_path, {"admin": {"keys": OPERATORS}}))
    url = "http://tb-tunnel-broker.tunnels.svc.cluster.local"
    assert f"Admin API: {url}/admin/v1" in notes
    assert f"Console: {url}/console" in notes
    assert "Secret tb-tunnel-broker, key admin-keys" in notes
    assert ALICE_KEY not in notes and CI_KEY not in notes
    assert "The Ingress routes only" not in notes


def test_notes_say_what_the_ingress_does_not_route(helm: Helm) -> None:
    production = ("-f", str(PRODUCTION_VALUES))
    notes = helm.notes(*production)
    assert "Console: https://tunnels.example.com/console" in notes
    assert "The Ingress routes only /v1, not /admin and /console" in notes
    routed = helm.notes(*production, "--set", "ingress.paths={/v1,/admin,/console}")
    assert "Console: https://tunnels.example.com/console" in routed
    assert "The Ingress routes only" not in routed
    everything = helm.notes(*production, "--set", "ingress.paths={/}")
    assert "The Ingress routes only" not in everything
    no_console = helm.notes(*production, "--set", "console.enabled=false")
    assert "/console" not in no_console
    assert "The Ingress routes only /v1, not /admin:" in no_console


def test_notes_say_nothing_of_an_admin_api_that_is_off(helm: Helm) -> None:
    notes = helm.notes()
    assert "Admin API" not in notes and "/console" not in notes

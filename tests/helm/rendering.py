"""Running the real ``helm`` against the chart and reading what it renders.

Helm comes from ``scripts/install_helm.sh`` (``.tools/bin/helm``) or PATH. A missing
helm fails the tests with the command that installs it: CI always has it, so a skip
would only hide a broken install step.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tunnel-broker"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
# Every example values file: CI lints and renders the chart with each.
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
DASHBOARD = CHART / "dashboards" / "tunnel-broker.json"


def helm_binary() -> str:
    local = REPO / ".tools" / "bin" / "helm"
    if os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found is None:
        pytest.fail("helm is not installed: run `bash scripts/install_helm.sh` (CI does)")
    return found


@dataclass
class Helm:
    binary: str
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Helm's caches and config in a scratch directory: nothing of the user's is read
        # or written, and no repository is ever consulted.
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def template(self, *args: str, release: str = "tb", namespace: str = "tunnels") -> Rendered:
        result = self.run("template", release, str(CHART), "--namespace", namespace, *args)
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        return Rendered(docs)

    def template_fails(self, *args: str) -> str:
        result = self.run("template", "tb", str(CHART), *args)
        assert result.returncode != 0, f"helm template {' '.join(args)} rendered:\n{result.stdout}"
        return result.stderr

    def lint(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), *args)

    def notes(self, *args: str, release: str = "tb", namespace: str = "tunnels") -> str:
        """NOTES.txt as ``helm install`` prints it. ``helm template`` leaves NOTES.txt out
        and ``helm install --dry-run`` wants a cluster, so a copy of the chart renders it
        as the value of a ConfigMap instead, with the same values and release."""
        copy = Path(tempfile.mkdtemp(dir=self.home)) / CHART.name
        shutil.copytree(CHART, copy)
        notes = copy / "templates" / "NOTES.txt"
        (copy / "templates" / "notes-preview.yaml").write_text(
            '{{- define "notes-preview" }}'
            + notes.read_text()
            + "{{- end }}\n"
            + "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-preview\n"
            + 'data:\n  notes: {{ include "notes-preview" . | quote }}\n'
        )
        notes.unlink()
        result = self.run(
            "template",
            release,
            str(copy),
            "--namespace",
            namespace,
            "--show-only",
            "templates/notes-preview.yaml",
            *args,
        )
        assert result.returncode == 0, result.stderr
        text: str = yaml.safe_load(result.stdout)["data"]["notes"]
        return text


@dataclass
class Rendered:
    """The manifests of one ``helm template``, with shortcuts to the broker's parts."""

    docs: list[dict[str, Any]]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"{len(found)} {kind} objects rendered"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["containers"]
        assert [c["name"] for c in containers] == ["broker"]
        container: dict[str, Any] = containers[0]
        return container

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found

    @property
    def config(self) -> dict[str, str]:
        """The broker's ConfigMap (the one the container's ``envFrom`` names; the
        dashboard's is another)."""
        (source,) = self.container["envFrom"]
        data: dict[str, str] = self.named("ConfigMap", source["configMapRef"]["name"])["data"]
        return data

    def env(self) -> dict[str, dict[str, Any]]:
        """The container's explicit ``env`` entries by name."""
        return {e["name"]: e for e in self.container.get("env", [])}

    def pod_environment(self, existing: dict[str, dict[str, str]]) -> dict[str, str]:
        """The TB_* variables the broker process would see: the ConfigMap, then ``env``
        with each ``secretKeyRef`` read from the chart's own Secret or from ``existing``
        (the Secrets an operator created: name -> key -> value). A reference to a Secret
        or key that holds nothing fails, as the pod would."""
        secrets = {
            d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            for d in self.all("Secret")
        }
        for name in existing:
            assert name not in secrets, f"the chart renders a Secret named {name} itself"
        secrets |= existing
        env = dict(self.config)
        for name, entry in self.env().items():
            if not name.startswith("TB_"):
                continue
            if "value" in entry:
                env[name] = entry["value"]
                continue
            source = entry["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name"
                env[name] = f"{self.deployment['metadata']['name']}-0"
                continue
            ref = source["secretKeyRef"]
            held = secrets.get(ref["name"])
            assert held is not None, f"{name}: no Secret {ref['name']}"
            assert ref["key"] in held, f"{name}: no key {ref['key']} in Secret {ref['name']}"
            env[name] = held[ref["key"]]
        return env

    def broker_variables(self) -> set[str]:
        """Every TB_* name the pod gets, from the ConfigMap and from ``env``."""
        names = set(self.config) | set(self.env())
        return {n for n in names if n.startswith("TB_")}

"""The Dockerfile builds the image the chart runs: multi-stage, non-root, no secrets,
``tunnel-broker serve`` on the chart's port.

No Docker engine runs where the tests do, so these read the Dockerfile the way the
builder would (instructions, stages, exec-form JSON) and run the one piece of build
logic that is plain Python (the dependency list) against the real pyproject.toml.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import yaml

from tests.helm.rendering import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRETISH = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|REDIS_URL|CREDENTIAL", re.I)


@dataclass
class Instruction:
    name: str
    args: str


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]


def instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        name, _, args = line.partition(" ")
        result.append(Instruction(name.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation"
    return result


def stages() -> tuple[list[Instruction], list[Stage]]:
    """Global instructions (ARG before the first FROM) and the stages."""
    head: list[Instruction] = []
    found: list[Stage] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.name == "FROM":
            words = instruction.args.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], alias))
        elif found:
            found[-1].instructions.append(instruction)
        else:
            head.append(instruction)
    return head, found


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.name} must use the exec (JSON) form"
    return [str(v) for v in value]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for item in shlex.split(instruction.args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def test_build_is_multi_stage_and_ships_only_the_built_virtualenv() -> None:
    _, found = stages()
    assert len(found) >= 2
    build, runtime = found[0], found[-1]
    assert build.alias == "build"
    (copy,) = runtime.all("COPY")
    assert copy.args.split()[0] == "--from=build"
    # The same base for both stages: the venv's interpreter link must resolve at run time.
    assert build.base == runtime.base
    assert not runtime.all("RUN") or all("pip" not in r.args for r in runtime.all("RUN"))


def test_image_runs_as_the_chart_non_root_user() -> None:
    _, found = stages()
    users = found[-1].all("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets Kubernetes verify runAsNonRoot"
    pod = chart_values()["podSecurityContext"]
    assert int(uid) == pod["runAsUser"]
    assert int(gid or uid) == pod["runAsGroup"] == pod["fsGroup"]


def test_entrypoint_is_tunnel_broker_serve_on_the_chart_port() -> None:
    _, found = stages()
    runtime = found[-1]
    command = exec_form(runtime.all("ENTRYPOINT")[-1]) + exec_form(runtime.all("CMD")[-1])
    assert command == ["tunnel-broker", "serve"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["tunnel-broker"] == "tunnel_broker.cli:main"
    port = chart_values()["containerPort"]
    assert [e.args for e in runtime.all("EXPOSE")] == [str(port)]
    env = env_of(runtime)
    assert env["TB_PORT"] == str(port)
    assert env["TB_HOST"] == "0.0.0.0"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem is read-only
    assert [s.args for s in runtime.all("STOPSIGNAL")] == ["SIGTERM"]  # starts the drain


def test_image_holds_no_credentials() -> None:
    head, found = stages()
    for instruction in head + [i for s in found for i in s.instructions]:
        if instruction.name in ("ENV", "ARG", "LABEL"):
            for item in shlex.split(instruction.args):
                assert not SECRETISH.search(item.partition("=")[0]), instruction
    copied = [i.args for s in found for i in s.all("COPY") + s.all("ADD")]
    for args in copied:
        assert not re.search(r"apps\.(toml|json)|\.env\b|secret", args, re.I), args
    # The context admits only what the build copies: no apps files, .env, venvs or .git.
    ignore = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "tunnel_broker"}


def test_every_file_the_build_copies_is_admitted_and_exists() -> None:
    _, found = stages()
    for instruction in found[0].all("COPY"):
        *sources, _dest = instruction.args.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in {"pyproject.toml", "README.md", "tunnel_broker"}


def test_dependency_step_lists_exactly_the_project_dependencies(tmp_path: Path) -> None:
    _, found = stages()
    (step,) = [r for r in found[0].all("RUN") if "tomllib" in r.args]
    words = shlex.split(step.args)
    assert words[:2] == ["python", "-c"]
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    result = subprocess.run(
        [sys.executable, "-c", words[2]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert result.stdout.split() == expected


def _dist_name(requirement: str) -> str:
    name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_dependencies_cover_every_import_of_the_broker() -> None:
    """The image installs only the declared dependencies: a module the broker imports
    but gets only through the test extras would crash the pod at start."""
    imported: set[str] = set()
    for path in (REPO / "tunnel_broker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names} - {"tunnel_broker"}
    declared = {
        _dist_name(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    # Each module must come from a declared distribution, not merely a transitive one.
    providers = packages_distributions()
    undeclared = {
        module
        for module in third_party
        if not {_dist_name(d) for d in providers.get(module, [module])} & declared
    }
    assert not undeclared, (
        f"imported by tunnel_broker but not in [project] dependencies: {undeclared}"
    )

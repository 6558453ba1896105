"""The README's two commands are the ones that exist and the one CI runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_demo_and_the_test_command() -> None:
    blocks = _readme_blocks()
    assert "./scripts/demo.sh" in blocks
    assert "./scripts/test.sh" in blocks
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == "exec ./scripts/test.sh"

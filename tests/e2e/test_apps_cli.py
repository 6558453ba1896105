"""``tunnel-broker apps new``: validated, escaped, and written where only its owner reads
it; ``serve`` warns about an apps file others can read."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_process import run_cli


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--id", "bad id!", "--webhook-url", "https://x.example/h"], "id"),
        (["--id", "ok", "--webhook-url", "ftp://x.example/h"], "webhook_url"),
        (["--id", 'a"]\n[[apps]]', "--webhook-url", "https://x.example/h"], "id"),
    ],
    ids=["bad id", "not http", "toml injection in the id"],
)
def test_invalid_apps_are_refused_and_nothing_is_printed(flags: list[str], named: str) -> None:
    result = run_cli("apps", "new", *flags)
    assert result.returncode == 2
    assert named in result.stderr
    assert result.stdout == ""


def test_every_value_is_escaped(tmp_path: Path) -> None:
    url = 'https://x.example/h?q="quoted"\\back'
    result = run_cli("apps", "new", "--id", "esc", "--webhook-url", url)
    assert result.returncode == 0, result.stderr
    (app,) = tomllib.loads(result.stdout)["apps"]
    assert app["webhook_url"] == url
    assert app["id"] == "esc"


def test_output_is_a_private_file_that_collects_apps(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    for app_id in ("one", "two"):
        result = run_cli(
            "apps",
            "new",
            "--id",
            app_id,
            "--webhook-url",
            "https://x.example/h",
            "--output",
            str(path),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "", "credentials must not reach the terminal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_cli("apps", "check", str(path)).stdout.strip() == "ok: 2 app(s)"


def test_an_existing_output_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    path.write_text("")
    path.chmod(0o644)
    result = run_cli(
        "apps", "new", "--id", "one", "--webhook-url", "https://x.example/h", "--output", str(path)
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_serve_warns_about_an_apps_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    path.write_text('[[apps]]\nid = "x"\n')  # invalid, so serve stops right after checking
    path.chmod(0o644)
    result = run_cli("serve", "--apps-file", str(path), "--port", "1")
    assert result.returncode == 2
    assert "readable by other users" in result.stderr
    path.chmod(0o600)
    quiet = run_cli("serve", "--apps-file", str(path), "--port", "1")
    assert quiet.returncode == 2
    assert "readable by other users" not in quiet.stderr

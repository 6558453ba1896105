"""``scripts/demo.sh``: its help, its dry run, and a real start and Ctrl-C of all three
servers (without the pip install step, which the test run has already done)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from demo_business_app.launch import Credentials, Plan, apps_config, build_parser, write_state

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo.sh"
VENV = str(Path(sys.executable).parent.parent)


def script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": VENV}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_help_lists_every_launcher_option() -> None:
    result = script("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: scripts/demo.sh")
    launcher_flags = set(re.findall(r"--[a-z-]+", build_parser().format_help()))
    assert launcher_flags - {"--help"} <= set(re.findall(r"--[a-z-]+", result.stdout))
    assert "--no-install" in result.stdout


def test_dry_run_starts_nothing_and_shows_no_secret(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = script("--dry-run", "--no-install", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "would start broker" in out and "tunnel_broker serve" in out
    assert "would start simulator" in out and "would start demo" in out
    assert "Open http://127.0.0.1:8000/" in out
    assert "whsec_" not in out and "tbk_" not in out
    assert not state.exists()


def test_state_files_hold_secrets_privately(tmp_path: Path) -> None:
    plan = Plan(tmp_path / "s", "127.0.0.1", 8000, 8080, 9200)
    creds = Credentials()
    write_state(plan, creds)
    assert stat.S_IMODE(plan.apps_file.stat().st_mode) == 0o600
    [app] = json.loads(plan.apps_file.read_text())
    assert app == apps_config(plan, creds)[0]
    assert app["webhook_url"] == "http://127.0.0.1:8000/webhook"
    assert app["wechat_api_base_url"] == "http://127.0.0.1:9200"


def test_demo_sh_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "VENV": VENV, "PYTHONUNBUFFERED": "1"}
    args = ["--no-install", "--port", "0", "--broker-port", "0", "--simulator-port", "0"]
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), *args, "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 40
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"Open (http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and "mini-program" in page.text
        assert httpx.get(url + "api/config", timeout=5).json()["rooms"][0] == "lobby"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        rest = proc.stdout.read()
        assert "Stopping" in rest
        for name in ("broker", "simulator", "demo"):
            assert (state / "logs" / f"{name}.log").exists()
        with_errors = (state / "logs" / "broker.log").read_text()
        assert "Traceback" not in with_errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

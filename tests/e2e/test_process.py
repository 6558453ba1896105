"""The real program: ``python -m tunnel_broker`` with flags, env vars and signals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.broker import app_config, new_secret
from tests.support.receiver import WebhookReceiver
from tests.support.servers import BrokerProcess, write_apps_file
from tests.support.waiting import check_for


async def test_sigterm_drains_closes_with_1012_and_flushes_webhooks(tmp_path: Path) -> None:
    # A slow receiver: tunnel.closed events are still in flight when the drain ends.
    receiver = WebhookReceiver(secret=new_secret(), behaviour="slow:0.3")
    config = app_config("demo", receiver.url, receiver.secret)
    apps = write_apps_file(tmp_path / "apps.json", [config])
    broker = BrokerProcess(
        ["--apps-file", str(apps), "--drain-seconds", "1", "--log-level", "info"],
        env={"TB_SECRET_KEY": "process-test-secret-0123456789"},
    )
    async with receiver.serving():
        await broker.start()
        try:
            headers = {"authorization": f"Bearer {config['api_keys'][0]}"}
            async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
                issued = [
                    (await http.post("/v1/tunnels", json={"user_id": f"u{i}"})).json()
                    for i in range(5)
                ]
                sockets = [await connect(i["connect_url"]) for i in issued]
                await check_for(10, lambda: len(receiver.events) == 5, what="connected events")
                broker.terminate()
                await check_for(
                    5,
                    lambda: httpx.get(broker.url + "/readyz").status_code == 503,
                    what="unready while draining",
                )
                codes = []
                for ws in sockets:
                    try:
                        await asyncio.wait_for(ws.recv(), 10)
                    except ConnectionClosed as exc:
                        codes.append(exc.rcvd.code if exc.rcvd else None)
                assert codes == [1012] * 5
                assert await broker.wait(30) == 0
        finally:
            broker.stop()
    output = broker.read_output()
    assert "token=" not in output.replace("token=[redacted]", "")
    closed = [e for e in receiver.events if e["type"] == "tunnel.closed"]
    assert sorted(e["tunnel_id"] for e in closed) == sorted(i["tunnel_id"] for i in issued)
    assert {e["code"] for e in closed} == {1012}


async def test_environment_variables_configure_the_broker(tmp_path: Path) -> None:
    receiver = WebhookReceiver(secret=new_secret())
    config = app_config("envapp", receiver.url, receiver.secret)
    apps = write_apps_file(tmp_path / "apps.json", [config])
    broker = BrokerProcess(
        [],
        env={
            "TB_APPS_FILE": str(apps),
            "TB_PUBLIC_URL": "https://tunnels.example.com",
            "TB_SECRET_KEY": "env-test-secret-0123456789",
            "TB_NODE_ID": "node-from-env",
        },
    )
    await broker.start()
    try:
        headers = {"authorization": f"Bearer {config['api_keys'][0]}"}
        async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
            issued = (await http.post("/v1/tunnels", json={"user_id": "x"})).json()
        assert issued["connect_url"].startswith("wss://tunnels.example.com/v1/connect?token=")
    finally:
        broker.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunnel_broker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_bad_apps_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "apps.toml"
    bad.write_text(
        '[[apps]]\nid = "x"\napi_keys = ["short"]\nwebhook_url = "ftp://x"\n'
        'webhook_secrets = ["whsec_c2VjcmV0"]\n'
    )
    result = run_cli("apps", "check", str(bad))
    assert result.returncode == 2
    assert "api_keys" in result.stderr and "webhook_url" in result.stderr
    assert "short" not in result.stderr, "keys must not be echoed"
    served = run_cli("serve", "--apps-file", str(bad), "--port", "1")
    assert served.returncode == 2
    assert "api_keys" in served.stderr


def test_apps_new_prints_an_entry_that_checks(tmp_path: Path) -> None:
    result = run_cli(
        "apps", "new", "--id", "fresh", "--webhook-url", "https://biz.example.com/hook"
    )
    assert result.returncode == 0
    path = tmp_path / "apps.toml"
    path.write_text(result.stdout)
    checked = run_cli("apps", "check", str(path))
    assert checked.stdout.strip() == "ok: 1 app(s)"
    listed = run_cli("apps", "list", env={"TB_APPS_FILE": str(path)})
    assert listed.stdout.startswith("fresh\thttps://biz.example.com/hook")


def test_bad_setting_value_names_the_flag() -> None:
    result = run_cli("serve", "--port", "eighty")
    assert result.returncode == 2
    assert "--port" in result.stderr
    env = run_cli("serve", env={"TB_PING_INTERVAL": "soon"})
    assert env.returncode == 2
    assert "TB_PING_INTERVAL" in env.stderr


async def test_json_log_format_writes_one_object_a_line_without_tokens(tmp_path: Path) -> None:
    import json

    receiver = WebhookReceiver(secret=new_secret())
    config = app_config("jsonlog", receiver.url, receiver.secret)
    apps = write_apps_file(tmp_path / "apps.json", [config])
    broker = BrokerProcess(
        [
            "--apps-file",
            str(apps),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--drain-seconds",
            "0.5",
            "--shutdown-flush-seconds",
            "1",
        ],
        env={"TB_SECRET_KEY": "json-log-secret-0123456789"},
    )
    await broker.start()
    try:
        headers = {"authorization": f"Bearer {config['api_keys'][0]}"}
        async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
            issued = (await http.post("/v1/tunnels", json={"user_id": "j"})).json()
        async with connect(issued["connect_url"]):
            pass
        broker.terminate()
        assert await broker.wait(30) == 0
    finally:
        broker.stop()
    lines = [line for line in broker.read_output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    token = issued["connect_url"].split("token=")[1]
    assert all(token not in line for line in lines)
    assert any("WebSocket /v1/connect?token=[redacted]" in r["message"] for r in records)

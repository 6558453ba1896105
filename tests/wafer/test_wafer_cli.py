"""Wafer mode from the ``apps`` CLI: on an app in Redis (in force on every pod within
seconds, signing keys rotated with an overlap, turned off), and in a new apps-file entry."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import cluster_of
from tests.support.redis_server import RedisServer
from tests.support.waiting import check_for
from tests.wafer.legacy import HOST, signed


def cli(*args: str, stdin: str = "", redis_url: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunnel_broker", "apps", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TB_REDIS_URL": redis_url},
    )


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)


async def wsurl_code(pod_url: str, app: str, key: str) -> Any:
    body = signed({"receiveUrl": f"https://{HOST}/weapp/tunnel", "protocolType": "wss"}, key)
    async with httpx.AsyncClient(base_url=pod_url) as http:
        return (await http.post(f"/wafer/{app}/get/wsurl", json=body)).json()["code"]


async def test_wafer_mode_of_a_redis_app_from_the_cli(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    async with cluster_of(tmp_path, redis_server, pods=2) as cluster:

        async def codes(key: str) -> list[Any]:
            return [await wsurl_code(pod.url, "legacy", key) for pod in cluster.pods]

        first = printed(
            cli(
                "create",
                "--id",
                "legacy",
                "--webhook-url",
                "https://biz.example.test/hooks",
                "--wafer-host",
                HOST,
                redis_url=url,
            )
        )
        old = first["wafer_signing_key"]
        assert old.startswith("wsk_")
        await check_for(10, lambda: _all(codes(old), 0), what="Wafer mode on every pod")
        assert "wafer=biz.example.test" in cli("list-redis", redis_url=url).stdout

        # A key the business servers already have, read from stdin; the old one still works.
        existing = "the-key-from-before-0123"
        rotated = cli(
            "wafer",
            "--id",
            "legacy",
            "--new-signing-key",
            "--wafer-signing-key-stdin",
            stdin=existing + "\n",
            redis_url=url,
        )
        assert rotated.returncode == 0 and existing not in rotated.stdout + rotated.stderr
        await check_for(10, lambda: _all(codes(existing), 0), what="new key accepted")
        assert await codes(old) == [0, 0]

        printed(cli("wafer", "--id", "legacy", "--new-signing-key", "--revoke-old", redis_url=url))
        await check_for(10, lambda: _all(codes(existing), 4002), what="old keys refused")

        assert cli("wafer", "--id", "legacy", "--off", redis_url=url).returncode == 0
        await check_for(10, lambda: _all(codes(existing), 4004), what="Wafer mode off")

        refused = cli("wafer", "--id", "legacy", redis_url=url)
        assert refused.returncode == 2 and "--wafer-host" in refused.stderr


async def _all(codes: Any, expected: int) -> bool:
    return all(code == expected for code in await codes)


NEW_APP = ("new", "--id", "legacy", "--webhook-url", "https://biz.example.test/hooks")


def test_a_new_apps_file_entry_with_wafer_mode(tmp_path: Path) -> None:
    result = cli(
        *NEW_APP,
        "--wafer-host",
        HOST,
        "--wafer-host",
        "10.0.0.5:3000",
        "--wafer-receive-url-origin",
        "http://10.0.0.5:3000",
        "--wafer-heartbeat-seconds",
        "5",
    )
    assert result.returncode == 0, result.stderr
    (app,) = tomllib.loads(result.stdout)["apps"]
    wafer = app["wafer"]
    assert wafer["business_hosts"] == [HOST, "10.0.0.5:3000"]
    assert wafer["receive_url_origin"] == "http://10.0.0.5:3000"
    assert wafer["heartbeat_seconds"] == 5 and wafer["connect_url_ttl_seconds"] == 600
    assert wafer["signing_keys"][0].startswith("wsk_")
    path = tmp_path / "apps.toml"
    path.write_text(result.stdout)
    assert cli("check", str(path)).stdout.strip() == "ok: 1 app(s)"
    assert "wafer=biz.example.test,10.0.0.5:3000" in cli("list", str(path)).stdout


def test_bad_wafer_flags_are_refused_clearly() -> None:
    base = NEW_APP
    no_host = cli(*base, "--wafer-heartbeat-seconds", "5")
    assert no_host.returncode == 2 and "--wafer-host" in no_host.stderr
    too_fast = cli(*base, "--wafer-host", HOST, "--wafer-heartbeat-seconds", "0")
    assert too_fast.returncode == 2 and "heartbeat_seconds" in too_fast.stderr
    assert too_fast.stdout == ""
    short = cli(*base, "--wafer-host", HOST, "--wafer-signing-key-stdin", stdin="short\n")
    assert short.returncode == 2 and "signing" in short.stderr and "short" not in short.stderr

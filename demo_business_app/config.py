"""The demo server's settings, read from flags or ``DEMO_*`` environment variables.

Secrets (the API key, the webhook secret) are best given as variables: flags show up in
the process list. ``scripts/demo.sh`` passes them that way.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo server needs to reach the broker and the WeChat simulator."""

    broker_url: str
    api_key: str
    webhook_secrets: list[str]
    simulator_url: str
    wechat_appid: str
    broker_app_id: str = "demo"
    db_path: str = "demo-board.sqlite3"
    bot_wait: float = 5.0
    round_seconds: float = 10.0
    tunnel_ttl: int = 3600
    host: str = "127.0.0.1"
    port: int = 8000


def parse_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> DemoConfig:
    """Flags first, then ``DEMO_*`` variables; the required ones must come from either."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m demo_business_app",
        description="Tunnel Broker demo business server: chat rooms, rock-paper-scissors, "
        "a shared drawing board, and a mini-program simulator page at /.",
    )

    def opt(flag: str, var: str, default: str | None = None, *, help: str) -> None:
        parser.add_argument(flag, default=env.get(var, default), help=f"{help} [env {var}]")

    opt("--host", "DEMO_HOST", "127.0.0.1", help="interface to bind")
    opt("--port", "DEMO_PORT", "8000", help="port of the page, API and webhook")
    opt("--broker-url", "DEMO_BROKER_URL", help="the broker's HTTP URL")
    opt("--api-key", "DEMO_API_KEY", help="the broker app's API key")
    opt("--webhook-secret", "DEMO_WEBHOOK_SECRET", help="the app's webhook secret (whsec_...)")
    opt("--simulator-url", "DEMO_SIMULATOR_URL", help="the WeChat simulator's URL")
    opt("--appid", "DEMO_WECHAT_APPID", help="the simulated WeChat appid of the broker app")
    opt("--broker-app-id", "DEMO_BROKER_APP_ID", "demo", help="the broker app id")
    opt("--db", "DEMO_DB", "demo-board.sqlite3", help="SQLite file for the board's strokes")
    opt("--bot-wait", "DEMO_BOT_WAIT", "5", help="seconds before a bot joins a lonely player")
    opt("--round-seconds", "DEMO_ROUND_SECONDS", "10", help="seconds per game round")
    args = parser.parse_args(argv)
    missing = [
        flag
        for flag, value in (
            ("--broker-url", args.broker_url),
            ("--api-key", args.api_key),
            ("--webhook-secret", args.webhook_secret),
            ("--simulator-url", args.simulator_url),
            ("--appid", args.appid),
        )
        if not value
    ]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or their DEMO_* variables)")
    try:
        return DemoConfig(
            broker_url=args.broker_url.rstrip("/"),
            api_key=args.api_key,
            webhook_secrets=[s for s in args.webhook_secret.split(",") if s],
            simulator_url=args.simulator_url.rstrip("/"),
            wechat_appid=args.appid,
            broker_app_id=args.broker_app_id,
            db_path=args.db,
            bot_wait=float(args.bot_wait),
            round_seconds=float(args.round_seconds),
            host=args.host,
            port=int(args.port),
        )
    except ValueError as exc:
        parser.error(str(exc))

"""``tunnel-broker``: serve, and manage apps.

Every ``serve`` flag is generated from ``config.SETTINGS`` and falls back to the ``TB_*``
environment variable of the same name, so flags, variables and docs cannot disagree.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
from collections.abc import Sequence

from tunnel_broker import __version__, redaction
from tunnel_broker.apps import AppsFileError, load_apps_file
from tunnel_broker.config import SETTINGS, Settings, SettingsError, settings_from

logger = logging.getLogger("tunnel_broker.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunnel-broker", description="WebSocket tunnel broker for mini-programs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the broker")
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            choices=setting.choices,
            help=f"{setting.help} [env {setting.env}]",
        )

    apps = commands.add_parser("apps", help="manage apps")
    apps_commands = apps.add_subparsers(dest="apps_command", required=True)
    check = apps_commands.add_parser("check", help="validate an apps file")
    check.add_argument("file", nargs="?", help="apps file (default: $TB_APPS_FILE)")
    listing = apps_commands.add_parser("list", help="list the apps of an apps file")
    listing.add_argument("file", nargs="?", help="apps file (default: $TB_APPS_FILE)")
    new = apps_commands.add_parser("new", help="print a new app entry with fresh credentials")
    new.add_argument("--id", required=True)
    new.add_argument("--webhook-url", required=True)
    return parser


def _drop_per_connection_lines(record: logging.LogRecord) -> bool:
    return not (
        record.levelno <= logging.INFO
        and isinstance(record.msg, str)
        and (record.msg.startswith(("connection ", '%s - "WebSocket')))
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redaction.install()
    # One line per webhook request or WebSocket is noise at 10,000 tunnels; keep them
    # for --log-level debug.
    if level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.error").addFilter(_drop_per_connection_lines)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redaction.RedactTokens())


def serve(settings: Settings) -> int:
    from tunnel_broker.server import build

    _configure_logging(settings.log_level)
    apps = []
    if settings.apps_file:
        try:
            apps = load_apps_file(settings.apps_file)
        except AppsFileError as exc:
            logger.error("%s", exc)
            return 2
    else:
        logger.warning("no --apps-file given: the broker knows no apps and accepts no API calls")
    if settings.backend != "memory":
        logger.error("backend %r is not available in this version", settings.backend)
        return 2
    if not settings.secret_keys():
        logger.warning(
            "no --secret-key/TB_SECRET_KEY: using a random one; connect URLs die with this process"
        )
        settings.with_generated_secret()
    try:
        _, server = build(settings, apps)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    server.run()
    return 0


def _apps_file(arg: str | None) -> str:
    path = arg or os.environ.get("TB_APPS_FILE", "")
    if not path:
        raise AppsFileError("give an apps file or set TB_APPS_FILE")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(vars(args), os.environ)
        except SettingsError as exc:
            print(f"tunnel-broker: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    try:
        if args.apps_command == "check":
            apps = load_apps_file(_apps_file(args.file))
            print(f"ok: {len(apps)} app(s)")
        elif args.apps_command == "list":
            for app in load_apps_file(_apps_file(args.file)):
                print(f"{app.id}\t{app.webhook_url}\tkeys={len(app.api_keys)}")
        elif args.apps_command == "new":
            key = "tbk_" + secrets.token_urlsafe(24)
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            print(
                f'[[apps]]\nid = "{args.id}"\napi_keys = ["{key}"]\n'
                f'webhook_url = "{args.webhook_url}"\nwebhook_secrets = ["{secret}"]'
            )
    except AppsFileError as exc:
        print(f"tunnel-broker: {exc}", file=sys.stderr)
        return 2
    return 0

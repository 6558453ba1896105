"""``tunnel-broker``: serve, and manage apps.

Every ``serve`` flag is generated from ``config.SETTINGS`` and falls back to the ``TB_*``
environment variable of the same name, so flags, variables and docs cannot disagree; the
``apps`` commands read ``TB_REDIS_URL`` and ``TB_APPS_FILE`` through the same declarations.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import stat
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError
from redis.exceptions import RedisError

from tunnel_broker import __version__, logs
from tunnel_broker.admin.operators import OperatorKeys
from tunnel_broker.apps import App, load_apps_file, new_api_key, new_webhook_secret
from tunnel_broker.backoff import Backoff
from tunnel_broker.config import SETTINGS, SETTINGS_BY_NAME, Settings, settings_from
from tunnel_broker.errors import AppsFileError, SettingsError
from tunnel_broker.validation import describe
from tunnel_broker.wafer_cli import add_wafer_flags, wafer_from, wafer_table

if TYPE_CHECKING:
    from tunnel_broker.backend.redis.apps import SyncAppStore

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
    new.add_argument(
        "--output",
        help="append the entry to this file (created with mode 0600) instead of printing it",
    )
    add_wafer_flags(new)

    redis_help = "Redis holding the cluster's apps (default: $TB_REDIS_URL)"
    create = apps_commands.add_parser("create", help="create an app in redis; prints its keys")
    create.add_argument("--id", required=True)
    create.add_argument("--webhook-url", required=True)
    create.add_argument("--redis-url", help=redis_help)
    add_wafer_flags(create)
    rlist = apps_commands.add_parser("list-redis", help="list the apps stored in redis")
    rlist.add_argument("--redis-url", help=redis_help)
    rotate = apps_commands.add_parser(
        "rotate-key", help="add a new API key (and webhook secret with --secret) to an app"
    )
    rotate.add_argument("--id", required=True)
    rotate.add_argument("--secret", action="store_true", help="rotate the webhook secret")
    rotate.add_argument(
        "--revoke-old", action="store_true", help="drop the previous keys (or secrets) now"
    )
    rotate.add_argument("--redis-url", help=redis_help)
    wafer = apps_commands.add_parser(
        "wafer", help="turn Wafer mode on, change it, or turn it off, for an app in redis"
    )
    wafer.add_argument("--id", required=True)
    wafer.add_argument("--off", action="store_true", help="turn Wafer mode off")
    wafer.add_argument(
        "--new-signing-key",
        action="store_true",
        help="put a new signing key first (generated, or from stdin); the old ones stay "
        "accepted unless --revoke-old",
    )
    wafer.add_argument("--revoke-old", action="store_true", help="drop the previous keys now")
    wafer.add_argument("--redis-url", help=redis_help)
    add_wafer_flags(wafer)
    delete = apps_commands.add_parser("delete", help="delete an app from redis")
    delete.add_argument("--id", required=True)
    delete.add_argument("--redis-url", help=redis_help)
    return parser


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML has no ``\\/``,
    which ``json.dumps`` never writes."""
    return json.dumps(value, ensure_ascii=False)


def _app_entry(app: App) -> str:
    """An apps-file entry for a validated ``app``, every value escaped."""

    def strings(values: list[str]) -> str:
        return "[" + ", ".join(_toml_string(v) for v in values) + "]"

    return (
        f"[[apps]]\nid = {_toml_string(app.id)}\napi_keys = {strings(app.api_keys)}\n"
        f"webhook_url = {_toml_string(app.webhook_url)}\n"
        f"webhook_secrets = {strings(app.webhook_secrets)}\n"
    ) + (f"\n{wafer_table(app.wafer)}" if app.wafer else "")


def _append_private(path: str, text: str) -> None:
    """Append to ``path``, readable by its owner only: the text holds credentials."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        if file.tell() > 0:
            file.write("\n")
        file.write(text)


def _warn_if_readable(path: str) -> None:
    """Warn when others may read the apps file. Group access is fine for a group of the
    broker's own (Kubernetes mounts Secrets as root:fsGroup 0440), not for another one."""
    try:
        info = os.stat(path)
    except OSError:
        return  # loading it reports the problem
    own_groups = {os.getegid(), *os.getgroups()}
    if info.st_mode & 0o007 or (info.st_mode & 0o070 and info.st_gid not in own_groups):
        logger.warning(
            "apps file %s is readable by other users (mode %04o): it holds API keys and "
            "webhook secrets; chmod 600 it",
            path,
            stat.S_IMODE(info.st_mode),
        )


def _new_app(args: argparse.Namespace) -> App:
    return App(
        id=args.id,
        api_keys=[new_api_key()],
        webhook_url=args.webhook_url,
        webhook_secrets=[new_webhook_secret()],
        wafer=wafer_from(args),
    )


def _listed(app: App) -> str:
    wafer = f"\twafer={','.join(app.wafer.business_hosts)}" if app.wafer else ""
    return f"{app.id}\t{app.webhook_url}\tkeys={len(app.api_keys)}{wafer}"


def _store(settings: Settings) -> SyncAppStore:
    """The apps in the Redis ``settings`` name, whatever its topology."""
    from tunnel_broker.backend.redis.apps import SyncAppStore
    from tunnel_broker.backend.redis.topology import RedisTopology

    return SyncAppStore(RedisTopology.from_settings(settings))


def _redis_apps_command(args: argparse.Namespace) -> int:
    store = _store(settings_from({"redis_url": args.redis_url}, os.environ))
    try:
        if args.apps_command == "create":
            app = _new_app(args)
            store.put(app, create=True)
            print(f"id = {app.id}\napi_key = {app.api_keys[0]}")
            print(f"webhook_secret = {app.webhook_secrets[0]}")
            if app.wafer:
                print(f"wafer_signing_key = {app.wafer.signing_keys[0]}")
        elif args.apps_command == "list-redis":
            for app in store.all():
                print(_listed(app))
        elif args.apps_command == "rotate-key":
            app = store.get(args.id)
            if args.secret:
                fresh = new_webhook_secret()
                kept = [] if args.revoke_old else app.webhook_secrets
                # The first secret signs: the new one leads, the old ones still verify.
                app = app.model_copy(update={"webhook_secrets": [fresh, *kept]})
                print(f"webhook_secret = {fresh}")
            else:
                fresh = new_api_key()
                kept = [] if args.revoke_old else app.api_keys
                app = app.model_copy(update={"api_keys": [*kept, fresh]})
                print(f"api_key = {fresh}")
            store.put(app)
        elif args.apps_command == "wafer":
            app = store.get(args.id)
            if args.off:
                wafer = None
            else:
                wafer = wafer_from(args, app.wafer, rotate=args.new_signing_key)
                if wafer is None:
                    raise AppsFileError("Wafer mode needs at least one --wafer-host")
            store.put(app.model_copy(update={"wafer": wafer}))
            keyed = app.wafer is None or args.new_signing_key
            if wafer is not None and keyed and not args.wafer_signing_key_stdin:
                print(f"wafer_signing_key = {wafer.signing_keys[0]}")
            print(f"{app.id}: wafer {'off' if wafer is None else 'on'}")
        elif args.apps_command == "delete":
            if not store.delete(args.id):
                raise AppsFileError(f"no app {args.id!r} in redis")
            print(f"deleted {args.id}")
    except RedisError as exc:
        raise AppsFileError(f"redis: {type(exc).__name__}: {exc}") from None
    finally:
        store.close()
    return 0


def serve(settings: Settings) -> int:
    from tunnel_broker.server import build, collect_garbage_less_often

    logs.configure(settings.log_level, settings.log_format)
    apps = []
    if settings.apps_file:
        _warn_if_readable(settings.apps_file)
        try:
            apps = load_apps_file(settings.apps_file)
        except AppsFileError as exc:
            logger.error("%s", exc)
            return 2
    else:
        logger.warning("no --apps-file given: the broker knows no apps and accepts no API calls")
    if settings.backend == "redis" and not settings.secret_keys():
        shared = _shared_secret_key(settings)
        if shared is None:
            return 2
        logger.info("using the cluster's token signing key from redis")
        settings = settings.with_secret_key(shared)
    if not settings.secret_keys():
        logger.warning(
            "no --secret-key/TB_SECRET_KEY: using a random one; connect URLs die with this process"
        )
        settings = settings.with_generated_secret()
    try:
        _, server = build(settings, apps)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    collect_garbage_less_often()
    server.run()
    return 0


def _shared_secret_key(settings: Settings, attempts: int = 30) -> str | None:
    """The cluster's signing key from Redis, waiting out a short Redis outage at start
    (a pod that exits at once would crash-loop while Redis restarts)."""
    backoff = Backoff(base=0.2, cap=2.0)
    for attempt in range(1, attempts + 1):
        try:
            store = _store(settings)
            try:
                return store.shared_secret_key(secrets.token_urlsafe(32))
            finally:
                store.close()
        except RedisError as exc:
            logger.warning(
                "redis backend: shared secret key unavailable (%s); attempt %d of %d",
                type(exc).__name__,
                attempt,
                attempts,
            )
            time.sleep(backoff.delay(attempt))
    logger.error("redis backend: no shared secret key; set TB_SECRET_KEY or fix TB_REDIS_URL")
    return None


def _apps_file(arg: str | None) -> str:
    path = arg or SETTINGS_BY_NAME["apps_file"].from_env(os.environ)
    if not path:
        raise AppsFileError("give an apps file or set TB_APPS_FILE")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(vars(args), os.environ)
            OperatorKeys.parse(settings.admin_keys.reveal())  # refuse weak keys before serving
            if settings.backend == "redis":
                from tunnel_broker.backend.redis.topology import RedisTopology

                RedisTopology.from_settings(settings)  # refuse settings no client takes
        except SettingsError as exc:
            print(f"tunnel-broker: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    try:
        if args.apps_command in ("create", "list-redis", "rotate-key", "wafer", "delete"):
            return _redis_apps_command(args)
        if args.apps_command == "check":
            apps = load_apps_file(_apps_file(args.file))
            print(f"ok: {len(apps)} app(s)")
        elif args.apps_command == "list":
            for app in load_apps_file(_apps_file(args.file)):
                print(_listed(app))
        elif args.apps_command == "new":
            entry = _app_entry(_new_app(args))
            if args.output:
                _append_private(args.output, entry)
                print(f"app {args.id} written to {args.output} (mode 0600)", file=sys.stderr)
            else:
                print(entry, end="")
    except (AppsFileError, SettingsError) as exc:
        print(f"tunnel-broker: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"tunnel-broker: invalid app: {describe(exc)}", file=sys.stderr)
        return 2
    return 0

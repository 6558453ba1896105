"""The ``apps`` CLI's Wafer mode: the flags ``apps new``, ``apps create`` and ``apps wafer``
share, and the ``[apps.wafer]`` table of an apps-file entry.

A signing key is never taken from the command line (other users see it in ``ps``): it is
generated, or read from stdin when the business servers already have one.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from tunnel_broker.errors import AppsFileError
from tunnel_broker.wafer.settings import WaferSettings

MAX_SIGNING_KEYS = 4


def add_wafer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Wafer mode (docs/migrating-from-wafer.md)")
    group.add_argument(
        "--wafer-host",
        action="append",
        metavar="HOST",
        help="a business server's serverHost (repeat for several); turns Wafer mode on",
    )
    group.add_argument(
        "--wafer-receive-url-origin",
        metavar="URL",
        help="scheme://host[:port] replacing that of every receive URL",
    )
    group.add_argument("--wafer-heartbeat-seconds", type=float, metavar="N")
    group.add_argument("--wafer-connect-url-ttl-seconds", type=int, metavar="N")
    group.add_argument(
        "--wafer-signing-key-stdin",
        action="store_true",
        help="read the tunnel signing key the business servers already use from stdin "
        "(default: generate one)",
    )


def new_signing_key() -> str:
    return "wsk_" + secrets.token_urlsafe(24)


def _signing_key(args: argparse.Namespace) -> str:
    if not args.wafer_signing_key_stdin:
        return new_signing_key()
    key = sys.stdin.readline().strip()
    if not key:
        raise AppsFileError("--wafer-signing-key-stdin: no key on stdin")
    return key


def wafer_from(
    args: argparse.Namespace, current: WaferSettings | None = None, rotate: bool = False
) -> WaferSettings | None:
    """The Wafer settings the flags ask for, on top of ``current``; None when neither
    the flags nor ``current`` turn Wafer mode on. ``rotate`` (or a key on stdin) puts a
    new signing key first, the old ones kept for the business servers not yet changed."""
    if current is None and not args.wafer_host:
        if rotate or args.wafer_signing_key_stdin or _tuning_given(args):
            raise AppsFileError("Wafer mode needs at least one --wafer-host")
        return None
    changes: dict[str, Any] = {}
    if args.wafer_host:
        changes["business_hosts"] = args.wafer_host
    if args.wafer_receive_url_origin is not None:
        changes["receive_url_origin"] = args.wafer_receive_url_origin or None
    if args.wafer_heartbeat_seconds is not None:
        changes["heartbeat_seconds"] = args.wafer_heartbeat_seconds
    if args.wafer_connect_url_ttl_seconds is not None:
        changes["connect_url_ttl_seconds"] = args.wafer_connect_url_ttl_seconds
    if current is None:
        changes["signing_keys"] = [_signing_key(args)]
        return WaferSettings.model_validate(changes)
    if rotate or args.wafer_signing_key_stdin:
        kept = [] if getattr(args, "revoke_old", False) else current.signing_keys
        changes["signing_keys"] = [_signing_key(args), *kept][:MAX_SIGNING_KEYS]
    return WaferSettings.model_validate({**current.model_dump(), **changes})


def _tuning_given(args: argparse.Namespace) -> bool:
    return any(
        value is not None
        for value in (
            args.wafer_receive_url_origin,
            args.wafer_heartbeat_seconds,
            args.wafer_connect_url_ttl_seconds,
        )
    )


def wafer_table(wafer: WaferSettings) -> str:
    """The ``[apps.wafer]`` table of an apps-file (TOML) entry, every value escaped."""
    lines = ["[apps.wafer]"]
    for name, value in wafer.model_dump(exclude_none=True).items():
        lines.append(f"{name} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"

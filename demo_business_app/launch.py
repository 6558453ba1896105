"""``python -m demo_business_app.launch``: broker + WeChat simulator + demo server, together.

This is what ``scripts/demo.sh`` runs once the virtualenv is ready. It writes fresh
credentials into a state directory (``.demo/`` by default: the apps file, mode 0600, the
board's SQLite file and the logs), starts the three processes on 127.0.0.1, waits until each
answers, prints the URL to open, and on Ctrl-C stops them in the order that loses nothing:
the broker first (its last ``tunnel.closed`` webhooks still reach the demo server), then
the demo server, then the simulator.

Secrets reach the children through environment variables, never flags, so they stay out of
the process list (the simulator's app secret is the exception: its CLI takes it as a flag,
and it is a throw-away secret of a simulated WeChat app).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

APP_ID = "demo"
WECHAT_APPID = "wxdemo0000000001"
OPERATOR = "demo-operator"  # the console's operator for a demo run


@dataclass(frozen=True)
class Plan:
    """Where everything listens and lives; ports are resolved (0 = a free port)."""

    state_dir: Path
    host: str
    port: int
    broker_port: int
    simulator_port: int

    @property
    def demo_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def broker_url(self) -> str:
        return f"http://{self.host}:{self.broker_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://{self.host}:{self.simulator_port}"

    @property
    def apps_file(self) -> Path:
        return self.state_dir / "apps.json"


@dataclass(frozen=True)
class Credentials:
    """Fresh for every run: nothing long-lived is worth keeping for a local demo."""

    api_key: str = field(default_factory=lambda: "tbk_" + secrets.token_urlsafe(24))
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )
    wechat_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    token_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    operator_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str


def apps_config(plan: Plan, creds: Credentials) -> list[dict[str, object]]:
    """The broker's apps file: one app whose webhooks go to the demo server and whose
    WeChat login is the simulator."""
    return [
        {
            "id": APP_ID,
            "api_keys": [creds.api_key],
            "webhook_url": f"{plan.demo_url}/webhook",
            "webhook_secrets": [creds.webhook_secret],
            "wechat_appid": WECHAT_APPID,
            "wechat_secret": creds.wechat_secret,
            "wechat_api_base_url": plan.simulator_url,
        }
    ]


def write_state(plan: Plan, creds: Credentials) -> None:
    """Write the apps file (0600: it holds the API key and secrets) and the log directory."""
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / "logs").mkdir(exist_ok=True)
    path = plan.apps_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(apps_config(plan, creds), handle, indent=2)
    path.chmod(0o600)


def services(plan: Plan, creds: Credentials, python: str = sys.executable) -> list[Service]:
    """The three processes, in start order (stopped in reverse)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "DEMO_"))}
    return [
        Service(
            "simulator",
            [
                python,
                "-m",
                "tunnel_broker.wechat.simulator",
                "--host",
                plan.host,
                "--port",
                str(plan.simulator_port),
                "--appid",
                WECHAT_APPID,
                "--secret",
                creds.wechat_secret,
                "--log-level",
                "warning",
            ],
            base,
            f"{plan.simulator_url}/sns/jscode2session",
        ),
        Service(
            "demo",
            [
                python,
                "-m",
                "demo_business_app",
                "--host",
                plan.host,
                "--port",
                str(plan.port),
                "--broker-url",
                plan.broker_url,
                "--simulator-url",
                plan.simulator_url,
                "--appid",
                WECHAT_APPID,
                "--db",
                str(plan.state_dir / "board.sqlite3"),
            ],
            {**base, "DEMO_API_KEY": creds.api_key, "DEMO_WEBHOOK_SECRET": creds.webhook_secret},
            f"{plan.demo_url}/healthz",
        ),
        Service(
            "broker",
            [
                python,
                "-m",
                "tunnel_broker",
                "serve",
                "--host",
                plan.host,
                "--port",
                str(plan.broker_port),
                "--apps-file",
                str(plan.apps_file),
                "--backend",
                "memory",
                "--drain-seconds",
                "1",
                "--shutdown-flush-seconds",
                "5",
            ],
            {
                **base,
                "TB_SECRET_KEY": creds.token_key,
                "TB_ADMIN_KEYS": f"{OPERATOR}:{creds.operator_key}",
            },
            f"{plan.broker_url}/healthz",
        ),
    ]


def redact(argv: Sequence[str], creds: Credentials) -> str:
    hidden = {
        creds.api_key,
        creds.webhook_secret,
        creds.wechat_secret,
        creds.token_key,
        creds.operator_key,
    }
    return " ".join("***" if arg in hidden else arg for arg in argv)


def resolve_port(host: str, port: int) -> int:
    """``port``, or a free one for 0; a busy port is reported now, not as a child's crash."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"demo: {host}:{port} is not available ({exc.strerror}); "
                "pick another port (see --help)"
            ) from None
        return int(sock.getsockname()[1])


def build_parser() -> argparse.ArgumentParser:
    """The launcher's options; ``scripts/demo.sh --help`` lists the same ones."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description="Start broker + WeChat simulator + demo business server and print the URL.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface for all three servers")
    parser.add_argument("--port", type=int, default=8000, help="demo page port (0: any free)")
    parser.add_argument("--broker-port", type=int, default=8080, help="broker port (0: any)")
    parser.add_argument(
        "--simulator-port", type=int, default=9200, help="WeChat simulator port (0: any)"
    )
    parser.add_argument(
        "--state-dir", default=".demo", help="apps file, board database and logs (.demo)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run, start nothing"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def wait_healthy(service: Service, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the service answers any HTTP response; fails early if the process died."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                client.get(service.health_url)
                return
            time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not answer within {timeout:.0f}s")


def stop(procs: list[tuple[Service, subprocess.Popen[bytes]]], timeout: float = 15.0) -> None:
    """SIGTERM each process, newest first, waiting for each before the next."""
    for _service, proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(plan: Plan, creds: Credentials, out: IO[str] = sys.stdout) -> int:
    write_state(plan, creds)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs: list[tuple[Service, subprocess.Popen[bytes]]] = []
    try:
        for service in services(plan, creds):
            log_path = plan.state_dir / "logs" / f"{service.name}.log"
            with log_path.open("wb") as log_file:
                # Own session: Ctrl-C reaches only this launcher, which stops the children
                # in order instead of all at once.
                proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                    service.argv,
                    env=service.env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((service, proc))
            wait_healthy(service, proc)
        print(
            f"\nTunnel Broker demo is running.\n\n"
            f"  Open {plan.demo_url}/ in your browser "
            f"(a second window, or a private one, is a second user).\n\n"
            f"  broker    {plan.broker_url}  (app {APP_ID!r}, apps file {plan.apps_file})\n"
            f"  console   {plan.broker_url}/console  (keys for this run only: operator\n"
            f"            {creds.operator_key}\n"
            f"            app {APP_ID!r} {creds.api_key})\n"
            f"  simulator {plan.simulator_url}\n"
            f"  logs      {plan.state_dir / 'logs'}/\n\n"
            f"Press Ctrl-C to stop.",
            file=out,
            flush=True,
        )
        while not stopping.wait(0.5):
            for service, proc in procs:
                if proc.poll() is not None:
                    print(f"demo: {service.name} exited ({proc.returncode}):", file=out)
                    print(tail(plan.state_dir / "logs" / f"{service.name}.log"), file=out)
                    return 1
        print("\nStopping…", file=out, flush=True)
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=out)
        for service, _ in procs:
            log = tail(plan.state_dir / "logs" / f"{service.name}.log")
            print(f"--- {service.name} log ---\n{log}", file=out)
        return 1
    finally:
        stop(procs)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = Path(args.state_dir)
    if args.dry_run:
        plan = Plan(state_dir, args.host, args.port, args.broker_port, args.simulator_port)
        creds = Credentials()
        print(f"would write {plan.apps_file} (mode 0600) with app {APP_ID!r} and fresh secrets")
        for service in services(plan, creds):
            print(f"would start {service.name}: {redact(service.argv, creds)}")
        print(f"would print: Open {plan.demo_url}/ in your browser")
        return 0
    plan = Plan(
        state_dir,
        args.host,
        resolve_port(args.host, args.port),
        resolve_port(args.host, args.broker_port),
        resolve_port(args.host, args.simulator_port),
    )
    return run(plan, Credentials())


if __name__ == "__main__":
    raise SystemExit(main())

"""The world each fuzzer runs in: a broker child process, a webhook receiver on a thread,
and the checks that say the broker came through a batch of examples unharmed.

Synchronous on purpose: hypothesis' ``@given`` drives plain functions, so everything here
is driven with blocking clients (httpx, ``websockets.sync``, raw sockets). The broker is a
child process rather than an in-process server so that its memory (RSS) and its log are
its own, and a crash is a crash rather than a broken test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from websockets.sync.client import connect

from tests.support.broker import app_config, new_secret
from tests.support.receiver import echo_messages
from tests.support.servers import BrokerProcess, free_port, write_apps_file
from tunnel_broker.errors import ERROR_TABLE

# Signs of an error the broker did not handle, in its log (its own records and uvicorn's).
TRACEBACK_MARKERS = (
    "Traceback (most recent call last)",
    "Exception in ASGI application",
    "Task exception was never retrieved",
    "Exception in callback",
    "unhandled error",
)


# ---- the webhook receiver ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One raw HTTP answer of the receiver: any status, any headers, any body bytes."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def echo_reply(events: list[dict[str, Any]]) -> Reply:
    """What a normal business server answers: echo each text message to its tunnel."""
    body = json.dumps({"actions": echo_messages(events)}).encode()
    return Reply(200, (("content-type", "application/json"),), body)


# Decides the answer to one batch; None means "answer normally" (``echo_reply``).
Script = Callable[[list[dict[str, Any]]], Reply | None]


@dataclass
class Served:
    """One delivery: the batch's events and the answer it got."""

    webhook_id: str
    events: list[dict[str, Any]]
    reply: Reply
    scripted: bool


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: ThreadedReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scripted answer may break the HTTP exchange on purpose (a 204 with a body);
        # the broker's reaction is what is tested, not this thread's broken pipe.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the broker's client expects
    # Head and body leave in two writes: without this, Nagle's algorithm holds the body
    # back for the broker's delayed ACK (40 ms a webhook).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.receiver.handle(body, headers)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.status == 204:  # no content, and no content-length either (RFC 9110)
            self.end_headers()
            return
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


@dataclass
class ThreadedReceiver:
    """A webhook receiver on a background thread whose answer to each batch a test can
    script (status, headers and body bytes, not only actions), which verifies every
    request's Standard Webhooks signature and records every batch in arrival order."""

    secret: str = field(default_factory=new_secret)
    script: Script | None = None
    served: list[Served] = field(default_factory=list)
    rejected_signatures: int = 0
    port: int = field(default_factory=free_port)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def handle(self, body: bytes, headers: dict[str, str]) -> Reply:
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self._changed:
                self.rejected_signatures += 1
            return Reply(401, (), b"bad signature")
        events: list[dict[str, Any]] = json.loads(body)["events"]
        scripted = self.script(events) if self.script is not None else None
        reply = scripted if scripted is not None else echo_reply(events)
        with self._changed:
            self.served.append(Served(headers["webhook-id"], events, reply, scripted is not None))
            self._changed.notify_all()
        return reply

    def events_of(self, tunnel_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        with self._changed:
            batches = list(self.served)
        return [
            e
            for s in batches
            for e in s.events
            if e["tunnel_id"] == tunnel_id and (kind is None or e["type"] == kind)
        ]

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until ``condition`` holds (checked whenever a batch arrives)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(min(left, 0.1))

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadedReceiver]:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="webhook-receiver")
        thread.daemon = True
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


# ---- the broker ---------------------------------------------------------------------------


@dataclass
class FuzzBroker:
    """A broker child process and what the fuzzers ask of it."""

    process: BrokerProcess
    apps: dict[str, dict[str, Any]]
    # One client per app (and one without a key), kept open: making an httpx client
    # costs tens of milliseconds (its TLS context), more than a request to the broker.
    _clients: dict[str | None, httpx.Client] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    def api(self, app_id: str | None) -> httpx.Client:
        """A business server's client: the app's API key on every request (no key for
        ``None``). Shared; closed with the broker."""
        client = self._clients.get(app_id)
        if client is None:
            headers = {}
            if app_id is not None:
                headers["authorization"] = f"Bearer {self.apps[app_id]['api_keys'][0]}"
            client = httpx.Client(base_url=self.url, headers=headers, timeout=10)
            self._clients[app_id] = client
        return client

    def close_clients(self) -> None:
        for client in self._clients.values():
            client.close()

    def issue(self, app_id: str, user_id: str, **body: Any) -> dict[str, Any]:
        response = self.api(app_id).post("/v1/tunnels", json={"user_id": user_id, **body})
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        return issued

    def rss(self) -> int:
        assert self.process.proc is not None
        return int(psutil.Process(self.process.proc.pid).memory_info().rss)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.api(None).get("/metrics").text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when the series does not exist yet)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def log(self) -> str:
        return self.process.read_output()

    def alive(self) -> bool:
        return self.process.proc is not None and self.process.proc.poll() is None


@contextlib.contextmanager
def running_broker(tmp: Path, apps: list[dict[str, Any]], *args: str) -> Iterator[FuzzBroker]:
    """``python -m tunnel_broker serve`` with ``apps`` and extra flags; stopped and its log
    removed at the end (the log is shown by the assertions that need it)."""
    apps_file = write_apps_file(tmp / "apps.json", apps)
    process = BrokerProcess(
        ["--apps-file", str(apps_file), "--log-level", "info", *args],
        env={"TB_SECRET_KEY": "fuzz-secret-key-0123456789", "TB_HANDOVER_FILE": ""},
    )
    try:
        asyncio.run(process.start())
        broker = FuzzBroker(process, {a["id"]: a for a in apps})
        try:
            yield broker
        finally:
            broker.close_clients()
    finally:
        process.stop()
        process.log_path.unlink(missing_ok=True)


def fuzz_app(app_id: str, receiver: ThreadedReceiver, **limits: Any) -> dict[str, Any]:
    """An app whose webhooks go to ``receiver``, with API budgets no fuzzer reaches (the
    rate limit is not what these fuzzers test; a 429 would hide what they do test)."""
    limits = {"api_requests_per_second": 100_000, "api_burst": 100_000, **limits}
    return app_config(app_id, receiver.url, receiver.secret, **limits)


# ---- errors ------------------------------------------------------------------------------


def problem_violations(status: int, content_type: str, content: bytes) -> list[str]:
    """What is wrong with an error response as RFC 9457 problem details of the broker's
    error table (docs/api.md, "Errors"): empty for a good one, and for any success."""
    if status < 400:
        return []
    if not content_type.startswith("application/problem+json"):
        return [f"{status} with content-type {content_type!r}, not application/problem+json"]
    try:
        body = json.loads(content)
    except ValueError:
        return [f"{status} problem body is not JSON"]
    if not isinstance(body, dict):
        return [f"{status} problem body is not an object"]
    wrong = [
        f"{status} problem field {name!r} is not a string"
        for name in ("type", "title", "detail", "code")
        if not isinstance(body.get(name), str)
    ]
    if body.get("status") != status:
        wrong.append(f"{status} problem says status {body.get('status')!r}")
    spec = ERROR_TABLE.get(str(body.get("code")))
    if spec is None or spec.status != status:
        wrong.append(f"{status} with code {body.get('code')!r}, not one of the table for it")
    errors = body.get("errors", [])
    if body.get("code") == "validation_failed" and not (
        isinstance(errors, list)
        and all(isinstance(e, dict) and {"field", "message"} <= e.keys() for e in errors)
    ):
        wrong.append("422 without an errors list of {field, message}")
    return wrong


# ---- after a batch: is the broker still well? ---------------------------------------------


def tracebacks(log: str) -> list[str]:
    """The distinct unhandled errors in a log. A record is a line that starts with its
    timestamp and the lines after it up to the next; it shows an unhandled error when any
    of its lines has a ``TRACEBACK_MARKERS`` marker. One record of each kind is kept (the
    same first line without its timestamp, the same exception type)."""
    records: list[list[str]] = []
    for line in log.splitlines():
        if line[:4].isdigit() or not records:
            records.append([line])
        else:
            records[-1].append(line)
    found: dict[str, str] = {}
    for record in records:
        if any(marker in line for line in record for marker in TRACEBACK_MARKERS):
            first = record[0].split(" ", 2)[-1]
            kind = record[-1].split(":", 1)[0]
            found.setdefault(first + " | " + kind, "\n".join(record[:60]))
    return list(found.values())


def traceback_problems(broker: FuzzBroker) -> list[str]:
    found = tracebacks(broker.log())
    if not found:
        return []
    return [
        f"{len(found)} kind(s) of unhandled error in the broker's log:\n\n" + "\n\n".join(found[:5])
    ]


def assert_echoes(broker: FuzzBroker, app_id: str) -> None:
    """A fresh, normal tunnel of ``app_id`` still works end to end: connect, send, get the
    business server's echo back (through webhook and action)."""
    issued = broker.issue(app_id, "health-" + uuid.uuid4().hex[:12])
    text = "health " + uuid.uuid4().hex
    with connect(issued["connect_url"], open_timeout=10, close_timeout=5) as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == "echo:" + text


def health_problems(broker: FuzzBroker, app_id: str) -> list[str]:
    """What is wrong with the broker after a batch of examples: it exited, ``/healthz``
    fails, a fresh normal tunnel of ``app_id`` does not echo, or its log shows an
    unhandled error. Empty when it is well."""
    if not broker.alive():
        return ["the broker exited:\n" + broker.log()[-4000:]]
    problems = []
    status = broker.api(None).get("/healthz").status_code
    if status != 200:
        problems.append(f"/healthz answered {status}")
    try:
        assert_echoes(broker, app_id)
    except Exception as exc:
        problems.append(f"a fresh tunnel does not echo: {exc!r}")
    return problems + traceback_problems(broker)


def assert_healthy(broker: FuzzBroker, app_id: str) -> None:
    problems = health_problems(broker, app_id)
    assert not problems, "\n\n".join(problems)


def settle_rss(broker: FuzzBroker, seconds: float = 0.5) -> int:
    """The broker's RSS once whatever the last examples started has had time to end."""
    time.sleep(seconds)
    return broker.rss()


MIB = 1024 * 1024


def rss_problems(before: int, after: int, bound: int, what: str) -> list[str]:
    growth = after - before
    if growth <= bound:
        return []
    return [
        f"broker RSS grew by {growth / MIB:.1f} MiB over {what} "
        f"({before / MIB:.1f} -> {after / MIB:.1f} MiB; bound {bound / MIB:.0f} MiB)"
    ]


# ---- the WeChat simulator -----------------------------------------------------------------


@dataclass
class Simulator:
    """``python -m tunnel_broker.wechat.simulator`` as a child process; logins are minted
    over its developer endpoint, as the demo does."""

    appid: str
    secret: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mint(self, user: str, **profile: Any) -> dict[str, Any]:
        response = httpx.post(
            self.url + "/simulator/login",
            json={"appid": self.appid, "user": user, **profile},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        minted: dict[str, Any] = response.json()
        return minted

    @contextlib.contextmanager
    def running(self) -> Iterator[Simulator]:
        args = [sys.executable, "-m", "tunnel_broker.wechat.simulator", "--port", str(self.port)]
        args += ["--appid", self.appid, "--secret", self.secret, "--log-level", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(self.url + "/sns/jscode2session", timeout=1)
                    break
                assert self.proc.poll() is None, "the WeChat simulator exited"
                assert time.monotonic() < deadline, "the WeChat simulator did not start"
                time.sleep(0.05)
            yield self
        finally:
            self.proc.kill()
            self.proc.wait()

"""The WeChat login endpoint, ``GET|POST /v1/wechat/{app}/login``, with generated headers
and bodies: what the Wafer client SDKs send (``X-WX-Code``, ``X-WX-Encrypted-Data`` and
``X-WX-IV``, ``X-WX-Raw-Data`` and ``X-WX-Signature``, or the same as a JSON body), right,
wrong, tampered, mistyped, missing, huge, in other content types, with headers that try
to pass for another client address.

Every example mints a login at the WeChat simulator (a child process, as in
``scripts/demo.sh``) when it needs a real code, and checks the answer:

- never a 5xx (the simulator answers every exchange properly, so nothing here is
  WeChat's fault);
- every error is problem details with a code of the error table;
- a login succeeds only with a fresh code of the app, and does with a fresh code alone
  or with user data that verifies; its answer carries the session and the identity
  WeChat gave, never the app secret;
- an app without WeChat login answers 404.

Afterwards the broker is healthy with nothing unhandled (and no secret) in its log, and
the per-client login budget holds: from one address, whatever the requests say about
themselves (``X-Forwarded-For`` and kin from an address that is not a trusted proxy),
exactly ``login_burst_per_client`` logins pass before ``429 rate_limited``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import fuzz_settings, timeout
from tests.fuzz.harness import (
    FuzzBroker,
    Simulator,
    ThreadedReceiver,
    fuzz_app,
    health_problems,
    problem_violations,
    running_broker,
)

APPID = "wx0123456789abcdef"
SECRET = "fuzz-wechat-app-secret-0123456789"
# Each test takes well under a minute in CI; longer with TB_FUZZ_EXAMPLES.
pytestmark = timeout(120)

APP = "demo"  # WeChat login, budgets no fuzzer reaches
STRICT = "strict"  # WeChat login, a small per-client budget that never refills in a test
PLAIN = "plain"  # no WeChat login
STRICT_BURST = 6
EXAMPLES = 300

Method = Literal["GET", "POST"]
METHODS: tuple[Method, ...] = ("GET", "POST")
CodeKind = Literal["fresh", "used", "absent", "empty", "garbage"]
DataKind = Literal["absent", "valid", "tampered", "foreign", "garbage"]


@dataclass(frozen=True)
class LoginSpec:
    """One login request, described; ``materialize`` turns it into bytes on the wire."""

    method: Method
    app: str
    code: CodeKind
    garbage_code: str
    encrypted: DataKind  # X-WX-Encrypted-Data with X-WX-IV
    signed: DataKind  # X-WX-Raw-Data with X-WX-Signature
    garbage: str
    in_body: bool  # the fields in a JSON body rather than in headers
    body_names: Literal["wafer", "snake"]  # encryptedData or encrypted_data
    mistyped: str | None  # a body field given a non-string value
    body: bytes | None  # a raw body instead (with in_body False)
    content_type: str | None
    extra_headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Request:
    spec: LoginSpec
    minted: dict[str, Any] | None
    method: str
    path: str
    headers: dict[str, bytes]
    content: bytes | None


# ---- strategies ----------------------------------------------------------------------------

header_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    min_size=1,
    max_size=40,
)
big_text = st.sampled_from([200, 2000, 7000, 20_000]).map(lambda n: "A" * n)
garbage_text = st.one_of(
    header_text,
    big_text,
    st.sampled_from(
        ["null", "undefined", "0", "%00", "../x", "a b", "é", "\u4e2d".encode().decode("latin-1")]
    ),
)
spoofing = st.sampled_from(["x-forwarded-for", "x-real-ip", "forwarded", "client-ip", "via"])
other_headers = st.sampled_from(
    ["x-wx-skey", "x-wx-id", "accept", "origin", "referer", "cookie", "x-wx-code"]
)
extra_headers = st.lists(
    st.tuples(
        st.one_of(spoofing, other_headers),
        st.one_of(
            st.ip_addresses().map(str),
            st.just("for=203.0.113.9;proto=https"),
            header_text,
        ).map(lambda v: v.encode("latin-1")),
    ),
    max_size=3,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.wafer+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "json",
            "",
        ]
    ),
)
raw_bodies = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"", b"null", b"[]", b'"code"', b"{", b"[" * 100_000, b"\xff\xfe{}"]),
    st.just(b'{"code": "' + b"c" * (1024 * 1024 + 16) + b'"}'),
    st.builds(lambda v: json.dumps(v).encode(), st.lists(st.integers(), max_size=3)),
)


@st.composite
def login_specs(draw: st.DrawFn, apps: st.SearchStrategy[str]) -> LoginSpec:
    in_body = draw(st.booleans())
    method: Method = "POST" if in_body else draw(st.sampled_from(METHODS))
    raw = None if in_body or method == "GET" else draw(st.none() | raw_bodies)
    return LoginSpec(
        method=method,
        app=draw(apps),
        code=draw(st.sampled_from(["fresh", "fresh", "used", "absent", "empty", "garbage"])),
        garbage_code=draw(garbage_text),
        encrypted=draw(
            st.sampled_from(["absent", "absent", "valid", "tampered", "foreign", "garbage"])
        ),
        signed=draw(
            st.sampled_from(["absent", "absent", "valid", "tampered", "foreign", "garbage"])
        ),
        garbage=draw(garbage_text),
        in_body=in_body,
        body_names=draw(st.sampled_from(["wafer", "snake"])),
        mistyped=draw(st.none() | st.sampled_from(["code", "encryptedData", "iv", "rawData"])),
        body=raw,
        content_type=draw(content_types),
        extra_headers=tuple(draw(extra_headers)),
    )


# ---- turning a spec into a request ---------------------------------------------------------


def tamper(value: str) -> str:
    """Change one character in the middle (base64 stays base64, JSON stays text)."""
    middle = len(value) // 2
    return value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]


def materialize(spec: LoginSpec, simulator: Simulator, broker: FuzzBroker) -> Request:
    minted = None
    fields: dict[str, Any] = {}
    if spec.code in ("fresh", "used"):
        minted = simulator.mint("user-" + spec.garbage[:8].encode().hex(), nickName="Fuzz")
        fields["code"] = minted["code"]
        if spec.code == "used":
            used = broker.api(None).get(
                f"/v1/wechat/{APP}/login", headers={"x-wx-code": minted["code"]}
            )
            assert used.status_code == 200, used.text
    elif spec.code == "empty":
        fields["code"] = ""
    elif spec.code == "garbage":
        fields["code"] = spec.garbage_code
    other = simulator.mint("someone-else") if "foreign" in (spec.encrypted, spec.signed) else None
    # Each pair as the simulator minted it (same names as the Wafer body fields).
    for kind, (data, proof) in (
        (spec.encrypted, ("encryptedData", "iv")),
        (spec.signed, ("rawData", "signature")),
    ):
        source = minted or other
        if kind == "absent":
            continue
        if kind == "garbage" or source is None:
            fields[data], fields[proof] = spec.garbage, spec.garbage[::-1]
        elif kind == "valid":
            fields[data], fields[proof] = source[data], source[proof]
        elif kind == "tampered":
            fields[data], fields[proof] = tamper(source[data]), source[proof]
        else:
            assert other is not None
            fields[data], fields[proof] = other[data], other[proof]
    headers: dict[str, bytes] = {}
    content: bytes | None = spec.body
    if spec.in_body:
        names = {"encryptedData": "encrypted_data", "rawData": "raw_data"}
        body = {
            (names.get(k, k) if spec.body_names == "snake" else k): v for k, v in fields.items()
        }
        if spec.mistyped is not None and spec.mistyped in body:
            body[spec.mistyped] = mistyped_value(spec.mistyped)
        content = json.dumps(body).encode()
    else:
        header_names = {
            "code": "x-wx-code",
            "encryptedData": "x-wx-encrypted-data",
            "iv": "x-wx-iv",
            "rawData": "x-wx-raw-data",
            "signature": "x-wx-signature",
        }
        headers = {header_names[k]: v.encode("utf-8") for k, v in fields.items()}
    if spec.content_type is not None:
        headers["content-type"] = spec.content_type.encode()
    for name, value in spec.extra_headers:
        headers.setdefault(name, value)
    return Request(spec, minted, spec.method, f"/v1/wechat/{spec.app}/login", headers, content)


def mistyped_value(name: str) -> Any:
    """A value of the wrong JSON type for a field (the spec names which field)."""
    return {"code": 12345, "encryptedData": ["x"], "iv": None, "rawData": {"nickName": 1}}[name]


def send(broker: FuzzBroker, request: Request) -> httpx.Response:
    headers = {name.encode(): value for name, value in request.headers.items()}
    return broker.api(None).request(
        request.method, request.path, headers=headers, content=request.content
    )


# ---- what must hold --------------------------------------------------------------------------


def login_problems(request: Request, response: httpx.Response) -> list[str]:
    spec = request.spec
    status = response.status_code
    problems = problem_violations(
        status, response.headers.get("content-type", ""), response.content
    )
    if status >= 500:
        problems.append(f"{status} for a login")
    if SECRET in response.text:
        problems.append("the app secret is in the answer")
    if spec.app != APP and spec.app != STRICT and status not in (404, 431):
        problems.append(f"{status} for app {spec.app!r}, which has no WeChat login")
    if status == 200:
        if spec.code != "fresh":
            problems.append(f"a login with a {spec.code} code succeeded")
        problems += success_problems(request, response)
    plain_fresh = (
        spec.code == "fresh"
        and spec.app == APP
        and spec.method == "GET"
        and not spec.in_body
        and spec.encrypted in ("absent", "valid")
        and spec.signed in ("absent", "valid")
        and not any(name.startswith("x-wx-") for name, _ in spec.extra_headers)
        and spec.content_type is None
        and sum(len(v) for v in request.headers.values()) < 8000
    )
    if plain_fresh and status != 200:
        problems.append(f"a fresh code with data that verifies got {status}")
    return [f"{p}\n  {describe(request)}\n  -> {status} {response.text[:300]}" for p in problems]


def success_problems(request: Request, response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return ["a 200 login answer is not JSON"]
    minted = request.minted or {}
    wrong = []
    if not isinstance(body.get("skey"), str) or len(body["skey"]) < 40:
        wrong.append("no skey in a 200 login answer")
    elif body.get("code") != 0 or body.get("data", {}).get("skey") != body["skey"]:
        wrong.append("a 200 login answer without the wafer2 shape")
    if body.get("identity", {}).get("openid") != minted.get("openid"):
        wrong.append("the identity is not the user WeChat gave")
    return wrong


def error_code(response: httpx.Response) -> str:
    if response.status_code < 400:
        return ""
    try:
        return str(response.json().get("code"))
    except (ValueError, AttributeError):
        return "?"


def describe(request: Request) -> str:
    headers = {k: (v[:60] + b"..." if len(v) > 60 else v) for k, v in request.headers.items()}
    content = request.content
    shown = None if content is None else content[:120] + (b"..." if len(content) > 120 else b"")
    return f"{request.method} {request.path} headers={headers} body={shown!r}"


# ---- the world ---------------------------------------------------------------------------------


@dataclass
class LoginWorld:
    broker: FuzzBroker
    simulator: Simulator


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoginWorld]:
    receiver = ThreadedReceiver()
    simulator = Simulator(APPID, SECRET)
    wechat = {
        "wechat_appid": APPID,
        "wechat_secret": SECRET,
        "wechat_api_base_url": simulator.url,
    }
    generous = {"login_requests_per_second_per_client": 100_000, "login_burst_per_client": 100_000}
    demo = fuzz_app(APP, receiver, **generous) | wechat
    strict = (
        fuzz_app(
            STRICT,
            receiver,
            login_requests_per_second_per_client=0.0001,
            login_burst_per_client=STRICT_BURST,
        )
        | wechat
    )
    plain = fuzz_app(PLAIN, receiver)
    # The test client (127.0.0.1) is not a trusted proxy: what its headers say about
    # client addresses must not count.
    args = ["--forwarded-allow-ips", "192.0.2.1"]
    with (
        receiver.running(),
        simulator.running(),
        running_broker(tmp_path_factory.mktemp("login"), [demo, strict, plain], *args) as broker,
    ):
        yield LoginWorld(broker, simulator)


# Mostly the WeChat app; sometimes one without WeChat login, or none at all.
other_apps = st.sampled_from([PLAIN, "nope", "x" * 200, "%2e%2e", "a%2Fb", "demo%00"])
apps = st.integers(0, 5).flatmap(lambda n: st.just(APP) if n else other_apps)


def test_generated_logins_get_proper_answers(world: LoginWorld) -> None:
    problems: list[str] = []
    answers: Counter[str] = Counter()

    @fuzz_settings(EXAMPLES)
    @given(spec=login_specs(apps))
    def run(spec: LoginSpec) -> None:
        request = materialize(spec, world.simulator, world.broker)
        response = send(world.broker, request)
        answers[f"{response.status_code} {error_code(response)}"] += 1
        problems.extend(login_problems(request, response))

    run()
    print("answers:", dict(sorted(answers.items())))  # what the examples reached (pytest -rA)
    problems = problems[:10] + health_problems(world.broker, APP)
    if SECRET in world.broker.log():
        problems.append("the app secret is in the broker's log")
    assert not problems, "\n\n".join(problems)


def test_the_per_client_login_budget_holds_whatever_the_requests_say(world: LoginWorld) -> None:
    statuses: list[int] = []
    problems: list[str] = []

    @fuzz_settings(1)
    @given(
        specs=st.lists(
            login_specs(st.just(STRICT)), min_size=STRICT_BURST + 10, max_size=STRICT_BURST + 10
        )
    )
    def run(specs: list[LoginSpec]) -> None:
        for spec in specs:
            request = materialize(spec, world.simulator, world.broker)
            response = send(world.broker, request)
            statuses.append(response.status_code)
            problems.extend(login_problems(request, response))
            if response.status_code == 429:
                body = response.json()
                retry = response.headers.get("retry-after", "")
                if body.get("code") != "rate_limited" or not retry.isdigit() or int(retry) < 1:
                    problems.append(f"a 429 without rate_limited and Retry-After: {retry!r} {body}")

    run()
    assert not problems, "\n\n".join(problems[:10])
    # A head over --max-header-bytes is refused (431) before the request is routed, so
    # before any budget is charged; every other request is charged.
    refused = [s == 429 for s in statuses if s != 431]
    assert len(refused) > STRICT_BURST, statuses
    assert refused == [False] * STRICT_BURST + [True] * (len(refused) - STRICT_BURST), statuses

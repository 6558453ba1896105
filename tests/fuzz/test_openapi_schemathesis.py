"""schemathesis against the broker's own ``/openapi.json``: every operation it documents,
called with schema-valid and schema-invalid requests, authenticated with an app's API key.

What must hold for every response:

- no 5xx;
- it conforms to the document: a documented status code, the documented content type,
  a body matching the documented schema (schemathesis' conformance checks);
- every error is RFC 9457 problem details (``application/problem+json``) with the fields
  of the document's ``Problem``, a ``status`` equal to the HTTP status and a ``code`` of
  the error table with that status (docs/api.md, "Errors");
- schema-invalid requests are refused (4xx), schema-valid ones accepted; authentication
  is enforced (schemathesis sends the same request without and with a wrong key).

The one allowance: a schema-valid request refused with ``422 validation_failed`` because
of a rule the document does not express (``DOCUMENT_GAPS``) is not counted against
``positive_data_acceptance``, and only that check, only for those fields. Each gap is a
place where the document should say more; they are listed in the module so that closing
one is a one-line change here.

Cases are drawn with ``operation.as_strategy()`` inside a hypothesis loop of this module
(schemathesis' pytest integration cannot take a fixture-served schema here). Every
failure is recorded rather than raised at once, so one run lists every distinct problem
of an operation with a curl command that reproduces it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.sync.client import ClientConnection, connect

from tests.fuzz.budget import fuzz_settings, timeout
from tests.fuzz.harness import (
    FuzzBroker,
    ThreadedReceiver,
    assert_healthy,
    fuzz_app,
    problem_violations,
    running_broker,
)
from tunnel_broker.http.openapi import openapi_document

# Each test takes well under a minute in CI; longer with TB_FUZZ_EXAMPLES.
pytestmark = timeout(120)

APP = "demo"
LIVE_USER = "fuzz-live-user"
LIVE_GROUP = "fuzz-live-group"
# Examples per operation, half drawn as schema-valid requests and half as schema-invalid.
EXAMPLES_PER_OPERATION = 100

# Operations that answer a stream for as long as the client reads (``GET /v1/trace``):
# a request of the fuzzer would never end. tests/admin/test_trace.py tests it.
STREAMS = {"GET /v1/trace"}
# The operations the document describes, for one test per operation (the served document
# is checked against this list, so an operation added later is fuzzed too).
DOCUMENTED = [
    f"{method.upper()} {path}"
    for path, methods in openapi_document("http://127.0.0.1")["paths"].items()
    for method in methods
]
OPERATIONS = [label for label in DOCUMENTED if label not in STREAMS]
OPERATOR_KEY = "fuzz-operator-key-" + "0" * 32

# How the broker may refuse a schema-invalid request: schemathesis' defaults, and 413 for a
# body over --max-api-body-bytes (a limit of docs/security.md that no schema states).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
# How the broker may refuse a schema-valid request: schemathesis' defaults (no such thing:
# 404), and 409 for a conflict with the state (an app id taken; an app of the apps file,
# which the admin API and an app's own key rotation do not change).
ACCEPTANCES = ["2xx", "401", "403", "404", "409"]

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]


# ---- rules the document does not express ----------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A rule the broker enforces with ``422 validation_failed`` that /openapi.json does
    not state, so that schemathesis rightly calls a request it refuses "schema-valid"."""

    field: str  # a regular expression for the field the broker names
    message: str  # a regular expression searched in the broker's message for it
    rule: str  # the rule, as docs/api.md states it


_ID_RULE = "ids and group names: no white space or '/', not '.' or '..' (docs/api.md)"
PATH_ID_GAP = Gap(
    r"(tunnel_id|user_id|group)",
    "no white space or '/'",
    "path parameters are only {type: string}; " + _ID_RULE,
)
BODY_AND_QUERY_GAPS = (
    Gap(
        r"(user_id|groups\.\d+|messages\.\d+\.to\.(tunnels|users|groups)\.\d+)",
        r"(no white space or '/'|should match pattern)",
        "the id pattern ^[^\\s/]+$ means less in JSON Schema (ECMA-262 \\s) than in the "
        "broker (Python's and pydantic's \\s, e.g. U+001C-U+001F, U+0085), and cannot "
        "say 'not . or ..'",
    ),
    Gap(r"cursor", "invalid cursor", "cursor must be a next_cursor the API returned"),
    Gap(
        r"messages\.\d+\.to",
        "exactly one of 'tunnels', 'users', 'groups' or 'all'",
        "TARGET is exactly one of tunnels/users/groups/all (no oneOf in the schema)",
    ),
    Gap(
        r"messages\.\d+",
        "exactly one of 'data' or 'data_base64'",
        "a message holds exactly one of data/data_base64 (no oneOf in the schema)",
    ),
    Gap(r"messages\.\d+", "not valid base64", "data_base64 must be base64 (no contentEncoding)"),
    Gap(r"messages\.\d+\.data", "too large", "a message is at most the app's max_message_bytes"),
    Gap(r"ttl", "max_tunnel_ttl_seconds", "ttl is at most the app's max_tunnel_ttl_seconds"),
    Gap(r"groups", "too many groups", "groups are at most the app's max_groups_per_tunnel"),
    Gap(
        r"identity",
        "too large",
        "identity, meta and groups together are at most the app's max_token_claims_bytes",
    ),
    Gap(r"\(body\)", "1000 or within 4000-4999", "a close code is 1000 or 4000-4999"),
    Gap(r"reason", "bytes of UTF-8", "a close reason is at most 123 bytes of UTF-8, not chars"),
    Gap(r"\(body\)", "levels deep", "JSON bodies nest at most 32 levels"),
    Gap(
        r"from",
        "before 'to'",
        "a usage window's from is before its to (no schema relates two parameters)",
    ),
    Gap(
        r"webhook_url",
        "should match pattern",
        "the URL pattern's \\s means less in JSON Schema (ECMA-262) than in the broker",
    ),
    Gap(r"\(body\)", "go together", "wechat_appid and wechat_secret are set together"),
    Gap(
        r"limits",
        "must not exceed max_tunnel_ttl_seconds",
        "default_tunnel_ttl_seconds is at most max_tunnel_ttl_seconds",
    ),
)
DOCUMENT_GAPS = (PATH_ID_GAP, *BODY_AND_QUERY_GAPS)


def gap_of(operation: Operation, error: dict[str, Any]) -> Gap | None:
    """The document gap that explains one field error of a 422, if any (the rule of path
    parameters only for fields that are path parameters of ``operation``)."""
    name = str(error.get("field"))
    in_path = name in {p.name for p in operation.path_parameters}
    gaps = (PATH_ID_GAP,) if in_path else BODY_AND_QUERY_GAPS
    for gap in gaps:
        if re.fullmatch(gap.field, name) and re.search(gap.message, str(error.get("message"))):
            return gap
    return None


def field_errors(response: Response) -> list[dict[str, Any]] | None:
    """The field errors of a ``422 validation_failed``; None for any other response."""
    if response.status_code != 422:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("code") != "validation_failed":
        return None
    errors = body.get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


# ---- the world: a broker, a receiver, one live tunnel -----------------------------------------


class LiveTunnel:
    """One connected tunnel (user ``LIVE_USER``, group ``LIVE_GROUP``), so that some
    requests name things that exist and get 200 answers whose bodies are checked too.
    Requests may close it; it is reconnected (same connect URL, same tunnel id) first."""

    def __init__(self, broker: FuzzBroker) -> None:
        self.broker = broker
        issued = broker.issue(APP, LIVE_USER, groups=[LIVE_GROUP])
        self.tunnel_id: str = issued["tunnel_id"]
        self.connect_url: str = issued["connect_url"]
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()

    def ensure(self) -> None:
        if self.ws is not None and self.ws.protocol.close_rcvd is None:
            return
        self.close()
        self.ws = self._stack.enter_context(
            connect(self.connect_url, open_timeout=10, close_timeout=2)
        )
        http = self.broker.api(APP)
        for _ in range(200):
            if http.get(f"/v1/tunnels/{self.tunnel_id}").status_code == 200:
                return
        raise AssertionError("the live tunnel did not come back")

    def close(self) -> None:
        self._stack.close()
        self.ws = None

    def path_parameters(self, operation: Operation) -> dict[str, str]:
        known = {"tunnel_id": self.tunnel_id, "user_id": LIVE_USER, "group": LIVE_GROUP}
        return {p.name: known[p.name] for p in operation.path_parameters if p.name in known}


@dataclass
class ApiWorld:
    broker: FuzzBroker
    schema: Any
    operations: dict[str, Operation]
    live: LiveTunnel


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    receiver = ThreadedReceiver()
    # Few groups per tunnel, so that joining the live tunnel to groups meets the limit.
    app = fuzz_app(APP, receiver, max_groups_per_tunnel=3)
    with (
        receiver.running(),
        running_broker(
            tmp_path_factory.mktemp("api"), [app], "--admin-keys", f"fuzz:{OPERATOR_KEY}"
        ) as broker,
    ):
        config = schemathesis.Config.from_dict(
            {
                "auth": {
                    "openapi": {
                        "apiKey": {"bearer": app["api_keys"][0]},
                        "adminKey": {"bearer": OPERATOR_KEY},
                    }
                },
                "checks": {
                    "negative_data_rejection": {"expected-statuses": REJECTIONS},
                    "positive_data_acceptance": {"expected-statuses": ACCEPTANCES},
                },
            }
        )
        schema = schemathesis.openapi.from_url(broker.url + "/openapi.json", config=config)
        operations: dict[str, Operation] = {}
        for result in schema.get_all_operations():  # STREAMS included: they are documented
            assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result}"
            operations[result.ok().label] = result.ok()
        live = LiveTunnel(broker)
        try:
            yield ApiWorld(broker, schema, operations, live)
        finally:
            live.close()
        assert receiver.rejected_signatures == 0


# ---- the fuzzer ----------------------------------------------------------------------------


@dataclass
class Findings:
    """Distinct failures of one operation, each with the first request that showed it."""

    failures: dict[str, str] = field(default_factory=dict)
    gaps_seen: set[str] = field(default_factory=set)

    def add(self, key: str, case: AnyCase, response: Response, message: str = "") -> None:
        if key not in self.failures:
            curl = case.as_curl_command(headers={"Authorization": "Bearer $KEY"})
            text = response.text[:600]
            self.failures[key] = f"{message}\n  {curl}\n  -> {response.status_code} {text}"

    def report(self) -> str:
        return "\n\n".join(f"[{key}]\n{detail}" for key, detail in self.failures.items())


def check_case(world: ApiWorld, case: AnyCase, findings: Findings) -> None:
    world.live.ensure()
    response = case.call(base_url=world.broker.url, timeout=10)
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            key = f"{failure.title} ({response.status_code})"
            findings.add(key, case, response, failure.message.strip())
    try:
        case.validate_response(response, checks=[positive_data_acceptance])
    except FailureGroup as group:
        # Excused only as a gap of the document: a 422 whose every field error is one of
        # DOCUMENT_GAPS. Anything else (another status, another field) is a failure.
        errors = field_errors(response)
        gaps = [gap_of(case.operation, e) for e in errors or []]
        if errors and all(gaps):
            findings.gaps_seen.update(g.rule for g in gaps if g is not None)
        else:
            unexplained = [e for e, g in zip(errors or [], gaps, strict=True) if g is None]
            why = f"\n  not a known document gap: {unexplained}" if unexplained else ""
            for failure in group.exceptions:
                key = f"{failure.title} ({response.status_code})"
                findings.add(key, case, response, failure.message.strip() + why)
    content_type = ",".join(response.headers.get("content-type", []))
    for violation in problem_violations(response.status_code, content_type, response.content):
        findings.add("not problem details: " + violation, case, response)


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_its_openapi_document(world: ApiWorld, label: str) -> None:
    operation = world.operations[label]
    live = world.live.path_parameters(operation)
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if live:
        strategies.append(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=live)
        )
    findings = Findings()

    @fuzz_settings(EXAMPLES_PER_OPERATION)
    @given(case=st.one_of(strategies))
    def run(case: AnyCase) -> None:
        check_case(world, case, findings)

    run()
    # Shown with the test's output (pytest -rA): which gaps of the document this run met.
    for rule in sorted(findings.gaps_seen):
        print(f"{label}: document gap excused: {rule}")
    assert not findings.failures, (
        f"{label}: {len(findings.failures)} distinct problem(s)\n\n" + findings.report()
    )


def test_the_served_document_lists_the_fuzzed_operations(world: ApiWorld) -> None:
    assert sorted(world.operations) == sorted(DOCUMENTED)


def test_broker_is_healthy_after_the_api_fuzzing(world: ApiWorld) -> None:
    """Last in this module (pytest keeps file order): the fuzzing above left the broker
    serving and without an unhandled error in its log."""
    assert_healthy(world.broker, APP)

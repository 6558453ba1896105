"""Random requests to the Wafer endpoints: whatever arrives, the answer is HTTP 200 in the
legacy shape (``{"code": int, "message": str}``, or ``code`` 0 with ``data``), never a
500, never a key, and the broker stays healthy. Bodies range from random bytes to
correctly signed envelopes around random ``data``, so the checks after the signature are
reached too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, fuzz_settings, timeout
from tests.fuzz.harness import FuzzBroker, running_broker
from tests.support.broker import app_config, new_secret
from tunnel_broker.wafer import envelope

pytestmark = timeout(120)

KEY = "fuzz-signing-key-1"
HOST = "biz.example.test"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
tunnel_ids = st.lists(st.text(min_size=1, max_size=12) | st.integers(), max_size=3)
packets = st.fixed_dictionaries(
    {},
    optional={
        "tunnelIds": tunnel_ids,
        "type": st.sampled_from(["message", "close", "shout"]) | st.integers(),
        "content": st.sampled_from(['{"type":"t","content":1}', "[1]", "{"]) | json_values,
    },
)
datas = st.one_of(
    json_values,
    st.lists(packets, max_size=3),
    st.fixed_dictionaries(
        {}, optional={"receiveUrl": st.sampled_from([f"https://{HOST}/t", "x"]) | json_values}
    ),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "envelope"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    value = draw(datas)
    data = value if isinstance(value, str) and draw(st.booleans()) else json.dumps(value)
    signed = draw(st.booleans())
    envelope_: dict[str, Any] = {
        "data": data if draw(st.integers(0, 9)) else draw(json_values),
        "tcId": envelope.tc_id(HOST) if draw(st.integers(0, 4)) else draw(st.text(max_size=32)),
        "signature": envelope.sign(data, KEY) if signed else draw(st.text(max_size=40)),
    }
    return json.dumps(envelope_).encode()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzBroker]:
    app = app_config(
        "demo",
        "http://127.0.0.1:9/unused",
        new_secret(),
        api_requests_per_second=100_000,
        api_burst=100_000,
    )
    app["wafer"] = {"signing_keys": [KEY], "business_hosts": [HOST]}
    with running_broker(Path(tmp_path_factory.mktemp("wafer-fuzz")), [app]) as running:
        yield running


@pytest.mark.parametrize("path", ["/wafer/demo/get/wsurl", "/wafer/demo/ws/push"])
def test_any_request_gets_a_legacy_answer(broker: FuzzBroker, path: str) -> None:
    http = broker.api(None)

    @fuzz_settings(examples(150))
    @given(bodies())
    def one(body: bytes) -> None:
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert isinstance(answer, dict) and isinstance(answer.get("code"), int), answer
        assert answer["code"] == 0 or isinstance(answer.get("message"), str), answer
        assert KEY not in response.text

    one()
    assert http.get("/healthz").status_code == 200

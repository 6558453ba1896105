"""Credentials never reach log handlers: one redacting filter, configured per kind."""

from __future__ import annotations

import logging

import pytest

from tunnel_broker.logs import RedactingFilter, RedactTokens, redact
from tunnel_broker.wechat import SecretQueryFilter


def test_redaction_hides_tokens_in_log_records() -> None:
    assert redact("GET /v1/connect?token=abc.def&x=1") == "GET /v1/connect?token=[redacted]&x=1"
    record = logging.LogRecord(
        "x",
        logging.INFO,
        "",
        0,
        '%s - "WebSocket %s"',
        ("1.2.3.4", "/v1/connect?token=SECRET"),
        None,
    )
    RedactTokens().filter(record)
    assert "SECRET" not in record.getMessage()


def test_token_and_wechat_filters_are_the_same_filter() -> None:
    assert issubclass(RedactTokens, RedactingFilter)
    assert issubclass(SecretQueryFilter, RedactingFilter)


def test_token_redaction_flattens_a_url_assembled_from_several_arguments() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, "", 0, "%s?%s=%s", ("/v1/connect", "token", "SECRET"), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "/v1/connect?token=[redacted]"


@pytest.mark.parametrize(
    "query",
    [
        "token=SECRET",
        "%74oken=SECRET",
        "t%6Fk%65n=SECRET",
        "%74%6f%6b%65%6e=SECRET",
    ],
)
def test_tokens_are_redacted_however_the_parameter_name_is_spelled(query: str) -> None:
    from urllib.parse import parse_qs

    assert parse_qs(query) == {"token": ["SECRET"]}  # what the connect handler reads
    line = f'127.0.0.1:5 - "WebSocket /v1/connect?{query}&x=1" [accepted]'
    assert "SECRET" not in redact(line)
    assert redact(line).endswith('&x=1" [accepted]')


def test_a_throttle_logs_a_few_errors_per_key_then_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tunnel_broker.logs import LogThrottle

    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), 3, 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, "test.throttle"):
        for n in range(100):
            throttle.error("app-a", "bad action %d", n)
        throttle.error("app-b", "other app")
        assert [r.getMessage() for r in caplog.records] == [
            "bad action 0",
            "bad action 1",
            "bad action 2",
            "other app",
        ]
        now[0] = 61.0
        throttle.error("app-a", "bad action %d", 100)
        assert [r.getMessage() for r in caplog.records][-2:] == [
            "app-a: 97 more like this were not logged",
            "bad action 100",
        ]

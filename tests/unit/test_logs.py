"""Credentials never reach log handlers: one redacting filter, configured per kind."""

from __future__ import annotations

import logging

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

"""Secret-bearing query parameters never reach log handlers."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from tunnel_broker.wechat import SecretQueryFilter, install_log_redaction
from tunnel_broker.wechat.redaction import redact_query_secrets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=s3&js_code=c0"
            "&grant_type=authorization_code",
            "GET https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=***&js_code=***"
            "&grant_type=authorization_code",
        ),
        (
            '"GET /sns/jscode2session?secret=abc HTTP/1.1" 200',
            '"GET /sns/jscode2session?secret=*** HTTP/1.1" 200',
        ),
        ("/cgi-bin/x?ACCESS_TOKEN=tok#frag", "/cgi-bin/x?ACCESS_TOKEN=***#frag"),
        ("?appsecret=kept&notsecret=kept", "?appsecret=kept&notsecret=kept"),
        ("no url here, secret=plain", "no url here, secret=plain"),
    ],
)
def test_redact_query_secrets(text: str, expected: str) -> None:
    assert redact_query_secrets(text) == expected


def test_filter_rewrites_records_of_its_logger(caplog: pytest.LogCaptureFixture) -> None:
    # Digits only: a random name must not hold the "abc" the log is checked for.
    name = f"test.redaction.n{uuid.uuid4().int}"
    install_log_redaction(name)
    caplog.set_level(logging.DEBUG)
    url = httpx.URL("http://h/p", params={"secret": "hunter2", "a": "b"})
    logging.getLogger(name).info("HTTP Request: %s %s %d", "GET", url, 200)
    logging.getLogger(name).info("nothing to hide: %d", 42)
    logging.getLogger(name).info("no arguments: http://h/?js_code=abc")
    assert "hunter2" not in caplog.text
    assert "abc" not in caplog.text
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "HTTP Request: GET http://h/p?secret=***&a=b 200",
        "nothing to hide: 42",
        "no arguments: http://h/?js_code=***",
    ]
    # Arguments are redacted in place: formatters that unpack them keep working.
    assert caplog.records[0].args == ("GET", "http://h/p?secret=***&a=b", 200)
    assert caplog.records[1].args == (42,)


def test_uvicorns_access_formatter_still_formats_redacted_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/sns/jscode2session?appid=wx1&secret=hunter2", "1.1", 200),
        None,
    )
    assert SecretQueryFilter().filter(record)
    line = AccessFormatter(fmt="%(message)s", use_colors=False).format(record)
    assert line == '127.0.0.1:5000 - "GET /sns/jscode2session?appid=wx1&secret=*** HTTP/1.1" 200'


def test_a_secret_assembled_from_several_arguments_is_still_redacted() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "GET %s?secret=%s", ("http://h/p", "hunter2"), None
    )
    assert SecretQueryFilter().filter(record)
    assert record.getMessage() == "GET http://h/p?secret=***"


def test_mapping_arguments_are_redacted() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%(url)s", ({"url": "/p?secret=hunter2"},), None
    )
    assert SecretQueryFilter().filter(record)
    assert record.getMessage() == "/p?secret=***"


def test_installing_twice_adds_one_filter() -> None:
    # Digits only: a random name must not hold the "abc" the log is checked for.
    name = f"test.redaction.n{uuid.uuid4().int}"
    install_log_redaction(name)
    install_log_redaction(name)
    filters = logging.getLogger(name).filters
    assert sum(isinstance(f, SecretQueryFilter) for f in filters) == 1


def test_default_targets_are_httpx_and_uvicorn_access() -> None:
    install_log_redaction()
    for name in ("httpx", "uvicorn.access"):
        assert any(isinstance(f, SecretQueryFilter) for f in logging.getLogger(name).filters)


def test_a_broken_record_passes_through_unchanged() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("not a number",), None)
    assert SecretQueryFilter().filter(record)
    assert record.msg == "%d"

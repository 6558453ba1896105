"""Keep WeChat credentials that travel in query strings out of log records.

WeChat's jscode2session takes the app secret (and the login code) as query parameters, and
both httpx (logger ``httpx``, INFO: ``HTTP Request: GET <url> ...``) and uvicorn's access log
(logger ``uvicorn.access``) log full URLs. ``SecretQueryFilter`` rewrites such records before
any handler sees them. A filter attached to a logger runs for records created on that logger,
so it is attached to the exact loggers that log URLs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

REDACTED = "***"
REDACTED_QUERY_PARAMS: tuple[str, ...] = ("secret", "js_code", "access_token")
URL_LOGGERS: tuple[str, ...] = ("httpx", "uvicorn.access")

_PARAM_VALUE = re.compile(
    r"(?P<name>[?&](?:" + "|".join(map(re.escape, REDACTED_QUERY_PARAMS)) + r")=)[^&#\s\"'>]*",
    re.IGNORECASE,
)


def redact_query_secrets(text: str) -> str:
    """``text`` with the values of secret-bearing query parameters replaced by ``***``."""
    return _PARAM_VALUE.sub(lambda match: match["name"] + REDACTED, text)


class SecretQueryFilter(logging.Filter):
    """Redacts secret-bearing query parameters from a record's message and arguments.

    Arguments are redacted one by one, keeping ``record.args`` a tuple or mapping: formatters
    such as uvicorn's ``AccessFormatter`` unpack them. Only when a secret survives that (say,
    a URL assembled from several arguments) is the record flattened to its final text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in record.args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as it normally would
            return True
        redacted = redact_query_secrets(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact_query_secrets(arg)
    if arg is None or isinstance(arg, int | float):
        return arg
    try:
        text = str(arg)  # e.g. httpx.URL
    except Exception:
        return arg
    redacted = redact_query_secrets(text)
    return redacted if redacted != text else arg


def install_log_redaction(*logger_names: str) -> None:
    """Attach one ``SecretQueryFilter`` to each logger (default: ``URL_LOGGERS``). Idempotent."""
    for name in logger_names or URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, SecretQueryFilter) for existing in logger.filters):
            logger.addFilter(SecretQueryFilter())

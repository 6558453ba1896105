"""Keep WeChat credentials that travel in query strings out of log records.

WeChat's jscode2session takes the app secret (and the login code) as query parameters, and
both httpx (logger ``httpx``, INFO: ``HTTP Request: GET <url> ...``) and uvicorn's access log
(logger ``uvicorn.access``) log full URLs. ``SecretQueryFilter`` rewrites such records before
any handler sees them; it is the broker's one redacting filter (``tunnel_broker.logs``)
told which parameters WeChat puts secrets in.
"""

from __future__ import annotations

from tunnel_broker.logs import QueryRedactor, RedactingFilter, attach

REDACTED = "***"
REDACTED_QUERY_PARAMS: tuple[str, ...] = ("secret", "js_code", "access_token")
URL_LOGGERS: tuple[str, ...] = ("httpx", "uvicorn.access")

redact_query_secrets = QueryRedactor(REDACTED_QUERY_PARAMS, REDACTED)
"""``text`` with the values of secret-bearing query parameters replaced by ``***``."""


class SecretQueryFilter(RedactingFilter):
    """Redacts secret-bearing query parameters from a record's message and arguments."""

    def __init__(self) -> None:
        super().__init__(redact_query_secrets)


def install_log_redaction(*logger_names: str) -> None:
    """Attach one ``SecretQueryFilter`` to each logger (default: ``URL_LOGGERS``). Idempotent."""
    attach(SecretQueryFilter, logger_names or URL_LOGGERS)

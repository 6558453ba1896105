"""Logging: the process's format (text or JSON lines) and the redaction of credentials.

Credentials travel in query strings that libraries log: connect tokens in uvicorn's
WebSocket request lines, the WeChat app secret and login codes in httpx's request lines.
One filter, ``RedactingFilter``, rewrites such records before any handler formats them;
``QueryRedactor`` says which parameters it hides and how.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping

Redact = Callable[[str], str]


class QueryRedactor:
    """Replaces the values of the named query parameters in a text.

    A name matches however a query parser would read it: in any case, and with any of its
    characters percent-encoded (``%74oken=`` is ``token=`` to the broker's own parser, so
    it must be to the redaction too). ``after`` is what must precede a name (``[?&]`` for
    URLs; empty to match a name anywhere, for records that quote a query without its
    ``?``).
    """

    def __init__(self, names: Iterable[str], mask: str, after: str = "[?&]") -> None:
        self.mask = mask
        alternatives = "|".join(_spellings(name) for name in names)
        self._pattern = re.compile(
            rf"(?P<name>{after}(?:{alternatives})=)[^&#\s\"'>]*", re.IGNORECASE
        )

    def __call__(self, text: str) -> str:
        return self._pattern.sub(lambda match: match["name"] + self.mask, text)


def _spellings(name: str) -> str:
    """A pattern for ``name`` with each character literal or percent-encoded."""
    return "".join(f"(?:{re.escape(c)}|%{ord(c):02x})" for c in name)


redact_tokens = QueryRedactor(("token",), "[redacted]", after="")


class RedactingFilter(logging.Filter):
    """Redacts a record's message and arguments with ``redact``.

    Arguments are redacted one by one, keeping ``record.args`` a tuple or mapping:
    formatters such as uvicorn's ``AccessFormatter`` unpack them. Only when a secret
    survives that (a URL assembled from several arguments) is the record flattened to
    its final text.
    """

    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: self._redact_arg(value) for key, value in record.args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as it normally would
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True

    def _redact_arg(self, arg: object) -> object:
        if isinstance(arg, str):
            return self.redact(arg)
        if arg is None or isinstance(arg, int | float):
            return arg
        try:
            text = str(arg)  # e.g. httpx.URL
        except Exception:
            return arg
        redacted = self.redact(text)
        return redacted if redacted != text else arg


class RedactTokens(RedactingFilter):
    """Hides connect tokens (``token=...``)."""

    def __init__(self) -> None:
        super().__init__(redact_tokens)


def redact(text: str) -> str:
    return redact_tokens(text)


def attach(filter_type: Callable[[], RedactingFilter], logger_names: Iterable[str]) -> None:
    """One ``filter_type`` on each named logger (filters run for their logger's own
    records only); idempotent."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(type(f) is filter_type for f in logger.filters):
            logger.addFilter(filter_type())


def install(
    logger_names: tuple[str, ...] = ("uvicorn.error", "uvicorn.access", "tunnel_broker"),
) -> None:
    attach(RedactTokens, logger_names)


class LogThrottle:
    """At most ``per_interval`` records per key and interval; the rest are counted and
    reported in one line when the next interval opens. For errors a peer can cause at
    will (a faulty webhook receiver's bad actions), so they inform rather than flood."""

    def __init__(
        self,
        logger: logging.Logger,
        per_interval: int = 10,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_interval = per_interval
        self.interval = interval
        self.clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}  # key: (start, logged, dropped)

    def error(self, key: str, message: str, *args: object) -> None:
        now = self.clock()
        start, logged, dropped = self._windows.get(key, (now, 0, 0))
        if now - start >= self.interval:
            if dropped:
                self.logger.error("%s: %d more like this were not logged", key, dropped)
            start, logged, dropped = now, 0, 0
        if logged < self.per_interval:
            self.logger.error(message, *args)
            logged += 1
        else:
            dropped += 1
        if len(self._windows) > 10_000:
            self._windows.clear()  # keys are apps; this only guards against a leak
        self._windows[key] = (start, logged, dropped)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log pipelines that parse fields rather than text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _drop_per_connection_lines(record: logging.LogRecord) -> bool:
    return not (
        record.levelno <= logging.INFO
        and isinstance(record.msg, str)
        and (record.msg.startswith(("connection ", '%s - "WebSocket')))
    )


def configure(level: str, log_format: str = "text") -> None:
    """The serving process's logging: level, format, redaction, less per-socket noise."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    install()
    # One line per webhook request or WebSocket is noise at 10,000 tunnels; keep them
    # for --log-level debug.
    if level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.error").addFilter(_drop_per_connection_lines)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())

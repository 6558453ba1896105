"""pydantic's validation errors in the broker's words: one field list, one sentence.

The HTTP API returns the list (``errors: [{field, message}]``), logs and the CLI print
the sentence; both name fields by their dotted path and never echo the input.
"""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_input=False, include_url=False)
    ]


def describe(exc: ValidationError) -> str:
    """``field: message; field: message``."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))

"""pydantic errors in the broker's words, never echoing the input."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from tunnel_broker.validation import describe, field_errors


class _Inner(BaseModel):
    n: int


class _Outer(BaseModel):
    inner: _Inner
    name: str


def test_fields_are_named_by_their_dotted_path_and_input_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate({"inner": {"n": "secret-value"}})
    errors = field_errors(caught.value)
    assert [e["field"] for e in errors] == ["inner.n", "name"]
    text = describe(caught.value)
    assert text.startswith("inner.n: ") and "; name: " in text
    assert "secret-value" not in text


def test_a_top_level_error_names_the_body() -> None:
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate([1])
    assert field_errors(caught.value)[0]["field"] == "(body)"

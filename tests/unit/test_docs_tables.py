"""The docs list every error code, close code and setting the code has."""

from __future__ import annotations

from pathlib import Path

from tunnel_broker.apps import AppLimits
from tunnel_broker.config import SETTINGS
from tunnel_broker.errors import ERROR_TABLE
from tunnel_broker.tunnels.closecodes import CLOSE_CODE_EXPLANATIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_api_docs_list_every_error_and_close_code() -> None:
    text = (DOCS / "api.md").read_text()
    for spec in ERROR_TABLE.values():
        assert f"| `{spec.code}` | {spec.status} | {'yes' if spec.temporary else 'no'} |" in text
    for code, meaning in CLOSE_CODE_EXPLANATIONS.items():
        assert f"| {int(code)} | {meaning} |" in text


def test_operations_docs_list_every_setting_and_limit() -> None:
    text = (DOCS / "operations.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.flag}` | `{setting.env}`" in text, setting.name
    for name in AppLimits.model_fields:
        assert f"`{name}`" in text, name

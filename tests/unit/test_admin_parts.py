"""Operator keys, rotation with an overlap and audit entries, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.broker import new_secret
from tunnel_broker.admin.audit import AuditEntry, changed_fields
from tunnel_broker.admin.operators import OperatorKeys
from tunnel_broker.admin.rotation import rotate_api_key, rotate_webhook_secret, without_retired
from tunnel_broker.apps import App, AppRegistry, fingerprint
from tunnel_broker.errors import ApiError, SettingsError

KEY = "k" * 32


def an_app() -> App:
    return App(
        id="shop",
        api_keys=["tbk_first_key_0123456789"],
        webhook_url="https://biz.example/hook",
        webhook_secrets=[new_secret()],
    )


def test_operator_keys_name_their_operator() -> None:
    keys = OperatorKeys.parse(f" alice:{KEY} , bob:{'b' * 40},")
    assert keys.enabled
    assert keys.operator(KEY) == "alice"
    assert keys.operator("b" * 40) == "bob"
    assert keys.operator(KEY + "x") is None
    assert keys.authenticate(f"Bearer {KEY}") == "alice"
    assert keys.authenticate(f"bearer {KEY}") == "alice"
    with pytest.raises(ApiError) as missing:
        keys.authenticate("")
    assert missing.value.code == "missing_admin_key"
    with pytest.raises(ApiError) as wrong:
        keys.authenticate(f"Basic {KEY}")
    assert wrong.value.code == "invalid_admin_key"
    with pytest.raises(ApiError) as off:
        OperatorKeys.parse("").authenticate(f"Bearer {KEY}")
    assert off.value.code == "admin_api_disabled"


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("alice", "expected name:key"),
        (f"al ice:{KEY}", "expected name:key"),
        (f"ops\n:{KEY}", "expected name:key"),
        ("alice:short", "at least 32"),
        (f"alice:{'k' * 31} k", "at least 32"),
        (f"alice:{KEY},alice:{'z' * 32}", "appears twice"),
    ],
)
def test_weak_or_ambiguous_operator_keys_are_refused_without_echoing(
    raw: str, complaint: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        OperatorKeys.parse(raw)
    assert complaint in str(refused.value)
    assert KEY not in str(refused.value) and "short" not in str(refused.value)


def test_rotation_keeps_the_old_key_until_its_deadline() -> None:
    app = an_app()
    old = app.api_keys[0]
    rotated, new = rotate_api_key(app, overlap_seconds=60, now=1000.0)
    assert rotated.api_keys == [new, old]
    assert rotated.key_expires_at(old) == 1060.0 and rotated.key_expires_at(new) is None
    assert without_retired(rotated, now=1059.0).api_keys == [new, old]
    assert without_retired(rotated, now=1060.0).api_keys == [new]
    # Rotating again keeps the earlier deadline of a key already retiring.
    again, newest = rotate_api_key(rotated, overlap_seconds=600, now=1010.0)
    assert again.api_keys == [newest, new, old]
    assert again.key_expires_at(old) == 1060.0 and again.key_expires_at(new) == 1610.0
    # No overlap: the old keys go at once, and nothing of theirs is left behind.
    cut, last = rotate_api_key(again, overlap_seconds=0, now=1020.0)
    assert cut.api_keys == [last] and cut.retiring == {}


def test_a_retired_key_is_refused_by_the_registry() -> None:
    app = an_app()
    old = app.api_keys[0]
    rotated, new = rotate_api_key(app, overlap_seconds=1, now=0.0)  # retired long ago
    registry = AppRegistry([rotated])
    assert registry.by_api_key(old) is None
    assert registry.by_api_key(new) is rotated


def test_webhook_secret_rotation_signs_with_the_new_secret_first() -> None:
    app = an_app()
    old = app.webhook_secrets[0]
    rotated, new = rotate_webhook_secret(app, overlap_seconds=60, now=1000.0)
    assert rotated.webhook_secrets == [new, old]
    assert rotated.signing_secrets(1059.0) == [new, old]
    assert rotated.signing_secrets(1060.0) == [new]
    assert fingerprint(old) in rotated.retiring


def test_an_app_must_keep_one_key_that_is_not_retiring() -> None:
    app = an_app()
    with pytest.raises(ValueError, match="must not be retiring"):
        App.model_validate({**app.model_dump(), "retiring": {fingerprint(app.api_keys[0]): 5.0}})


def test_audit_entries_name_fields_never_values() -> None:
    app = an_app()
    rotated, new = rotate_api_key(app, overlap_seconds=60, now=1000.0)
    changed = rotated.model_copy(
        update={"limits": rotated.limits.model_copy(update={"max_tunnels": 3})}
    )
    names = changed_fields(app.model_dump(), changed.model_dump())
    assert names == ["api_keys", "limits.max_tunnels", "retiring"]
    entry = AuditEntry("alice", "app.update", "shop", tuple(names), at=0.0)
    assert new not in entry.encode() and app.api_keys[0] not in entry.encode()
    assert entry.to_json() == {
        "at": "1970-01-01T00:00:00.000Z",
        "operator": "alice",
        "action": "app.update",
        "app_id": "shop",
        "changes": names,
    }


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8))
def test_any_sequence_of_rotations_leaves_one_working_key(overlaps: list[int]) -> None:
    app = an_app()
    now = 0.0
    for overlap in overlaps:
        app, key = rotate_api_key(app, overlap_seconds=overlap, now=now)
        assert app.api_keys[0] == key and app.key_expires_at(key) is None
        assert all(app.key_expires_at(k) is not None for k in app.api_keys[1:])
        now += 500

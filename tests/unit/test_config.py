"""Settings: declared once, read from flags and TB_* variables, frozen."""

from __future__ import annotations

import dataclasses

import pytest

from tunnel_broker.config import SETTINGS, SETTINGS_BY_NAME, Secret, Settings, settings_from
from tunnel_broker.errors import SettingsError


def test_settings_flags_win_over_env_and_secrets_hide() -> None:
    settings = settings_from(
        {"port": "9000"}, {"TB_PORT": "1", "TB_SECRET_KEY": "k1,k2", "TB_DRAIN_SECONDS": "2.5"}
    )
    assert settings.port == 9000
    assert settings.drain_seconds == 2.5
    assert settings.secret_keys() == ["k1", "k2"]
    assert "k1" not in repr(settings)
    assert settings.connect_base_url == "ws://127.0.0.1:9000"
    with pytest.raises(SettingsError, match="TB_BACKEND"):
        settings_from({}, {"TB_BACKEND": "etcd"})
    assert {s.env for s in SETTINGS} >= {
        "TB_PORT",
        "TB_APPS_FILE",
        "TB_BACKEND",
        "TB_REDIS_URL",
        "TB_NODE_ID",
        "TB_PUBLIC_URL",
        "TB_HOST",
    }
    assert repr(Secret("x")) == "Secret('**********')"
    assert Settings(public_url="https://a.example/").connect_base_url == "wss://a.example"


def test_every_settings_field_is_declared_with_help_once() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [s.name for s in SETTINGS] == names
    assert all(s.help for s in SETTINGS)
    assert SETTINGS_BY_NAME["backend"].choices == ("memory", "redis")
    assert SETTINGS_BY_NAME["port"].parse("81", "--port") == 81
    with pytest.raises(SettingsError, match="--port: not a valid int"):
        SETTINGS_BY_NAME["port"].parse("eighty", "--port")


def test_settings_are_frozen_and_changed_only_by_copy() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    generated = settings.with_generated_secret()
    assert generated is not settings and len(generated.secret_keys()) == 1
    assert settings.secret_keys() == []
    assert generated.with_generated_secret() is generated


def test_a_single_setting_reads_its_own_variable() -> None:
    assert SETTINGS_BY_NAME["apps_file"].from_env({"TB_APPS_FILE": "a.toml"}) == "a.toml"
    assert SETTINGS_BY_NAME["apps_file"].from_env({}) is None
    redis_url = SETTINGS_BY_NAME["redis_url"].from_env({"TB_REDIS_URL": "redis://h:1/0"})
    assert isinstance(redis_url, Secret) and redis_url.reveal() == "redis://h:1/0"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("Yes", True), ("on", True), ("false", False), ("0", False)],
)
def test_boolean_settings_read_the_usual_spellings(raw: str, expected: bool) -> None:
    assert settings_from({"durable_events": raw}, {}).durable_events is expected
    assert settings_from({}, {"TB_DURABLE_EVENTS": raw}).durable_events is expected


def test_a_boolean_setting_refuses_anything_else_and_says_what_it_wants() -> None:
    with pytest.raises(SettingsError, match="true or false"):
        settings_from({"durable_events": "maybe"}, {})
    assert Settings().durable_events is True

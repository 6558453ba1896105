"""Backoff, rate limits, events, redaction, config, apps files, actions defaults."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker import events
from tunnel_broker.actions import ActionError, default_tunnel
from tunnel_broker.apps import AppRegistry, AppsFileError, load_apps_file, parse_apps
from tunnel_broker.backoff import Backoff, parse_retry_after
from tunnel_broker.config import SETTINGS, Secret, Settings, SettingsError, settings_from
from tunnel_broker.ratelimit import TokenBucket
from tunnel_broker.redaction import RedactTokens, redact

SECRET = "whsec_" + "a" * 40


def test_backoff_grows_with_jitter_and_respects_the_cap() -> None:
    backoff = Backoff(base=1, factor=2, cap=10, rng=random.Random(1))
    delays = [backoff.delay(n) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1
    assert all(d <= 10 for d in delays)
    assert delays[5] >= 5


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7", now=0, limit=60) == 7
    assert parse_retry_after("700", now=0, limit=60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470, limit=60) == 10
    assert parse_retry_after("soon", now=0, limit=60) is None
    assert parse_retry_after(None, now=0, limit=60) is None


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(now=0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.5)
    assert not bucket.take(now=0.5)


@given(text=st.text(max_size=100), code=st.integers(1000, 4999), reason=st.text(max_size=30))
def test_events_are_valid_json(text: str, code: int, reason: str) -> None:
    fragment = events.tunnel_fragment("a", "t", 'u"ser', {"n": text}, {"m": [1]})
    for event in (
        events.connected(fragment, "t"),
        events.message(fragment, "t", text),
        events.message(fragment, "t", text.encode()),
        events.closed(fragment, "t", code, reason),
    ):
        decoded = json.loads(event.body)
        assert decoded["user_id"] == 'u"ser'
        assert decoded["identity"] == {"n": text}
        assert decoded["id"] == event.id
    body = json.loads(events.batch_body([events.connected(fragment, "t")] * 2))
    assert len(body["events"]) == 2


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


def test_apps_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "apps.toml"
    toml.write_text(
        f'[[apps]]\nid = "a"\napi_keys = ["key-aaaaaaaaaaaaaaaa"]\nwebhook_url = "http://x/h"\n'
        f'webhook_secrets = ["{SECRET}"]\n[apps.limits]\nmax_message_bytes = 10\n'
    )
    (app,) = load_apps_file(toml)
    assert app.limits.max_message_bytes == 10
    js = tmp_path / "apps.json"
    js.write_text(
        json.dumps(
            {
                "apps": [
                    {
                        "id": "b",
                        "api_keys": ["key-bbbbbbbbbbbbbbbb"],
                        "webhook_url": "https://x",
                        "webhook_secrets": [SECRET],
                    }
                ]
            }
        )
    )
    assert load_apps_file(js)[0].id == "b"
    registry = AppRegistry(load_apps_file(js))
    assert registry.by_api_key("key-bbbbbbbbbbbbbbbb") is not None
    assert registry.by_api_key("key-bbbbbbbbbbbbbbbX") is None


@pytest.mark.parametrize(
    ("apps", "message"),
    [
        ({"nope": 1}, "expected a list"),
        (
            [{"id": "a", "api_keys": [], "webhook_url": "http://x", "webhook_secrets": [SECRET]}],
            "api_keys",
        ),
        (
            [
                {
                    "id": "a",
                    "api_keys": ["k" * 16],
                    "webhook_url": "http://x",
                    "webhook_secrets": ["bad"],
                }
            ],
            "webhook_secrets",
        ),
        (
            [
                {
                    "id": "a",
                    "api_keys": ["k" * 16],
                    "webhook_url": "http://x",
                    "webhook_secrets": [SECRET],
                    "limits": {"max_message_bytes": 0},
                }
            ],
            "max_message_bytes",
        ),
        (
            [
                {
                    "id": "a",
                    "api_keys": ["k" * 16],
                    "webhook_url": "http://x",
                    "webhook_secrets": [SECRET],
                }
            ]
            * 2,
            "twice",
        ),
    ],
)
def test_apps_errors_name_the_problem(apps: object, message: str) -> None:
    with pytest.raises(AppsFileError, match=message):
        parse_apps(apps)


def test_default_action_tunnel() -> None:
    f = b'"app_id":"a"'
    one = [events.message(f, "t1", "x"), events.message(f, "t1", "y")]
    assert default_tunnel(one, None) == "t1"
    mixed = [events.message(f, "t1", "x"), events.message(f, "t2", "y")]
    assert default_tunnel(mixed, mixed[1].id) == "t2"
    with pytest.raises(ActionError):
        default_tunnel(mixed, None)
    with pytest.raises(ActionError):
        default_tunnel(mixed, "evt_unknown")

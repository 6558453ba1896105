"""Apps files: formats, validation errors that name the problem, API-key lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunnel_broker.apps import AppRegistry, AppsFileError, load_apps_file, parse_apps

SECRET = "whsec_" + "a" * 40


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


def _app(**limits: object) -> dict[str, object]:
    return {
        "id": "a",
        "api_keys": ["k" * 16],
        "webhook_url": "http://x",
        "webhook_secrets": [SECRET],
        "limits": limits,
    }


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"default_tunnel_ttl_seconds": 7200, "max_tunnel_ttl_seconds": 3600},
            "default_tunnel_ttl_seconds must not exceed",
        ),
        ({"max_token_claims_bytes": 4097}, "max_token_claims_bytes"),
    ],
    ids=["default ttl above the max", "claims that would not fit a connect URL"],
)
def test_impossible_limits_are_refused_at_load(limits: dict[str, object], message: str) -> None:
    with pytest.raises(AppsFileError, match=message):
        parse_apps([_app(**limits)])


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://api.weixin.qq.com", True),
        ("http://127.0.0.1:9200", True),
        ("http://localhost:9200", True),
        ("http://api.weixin.qq.com", False),
        ("http://10.0.0.7:9200", False),
    ],
)
def test_the_wechat_secret_travels_over_tls_except_to_a_local_simulator(
    url: str, accepted: bool
) -> None:
    entry = {**_app(), "wechat_appid": "wx1", "wechat_secret": "s", "wechat_api_base_url": url}
    if accepted:
        assert parse_apps([entry])[0].wechat_api_base_url == url
    else:
        with pytest.raises(AppsFileError, match="must be https"):
            parse_apps([entry])

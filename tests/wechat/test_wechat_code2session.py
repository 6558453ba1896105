"""Reading jscode2session answers, without the network."""

from __future__ import annotations

import json

import pytest

from tunnel_broker.wechat import (
    Code2Session,
    CodeAlreadyUsed,
    InvalidAppCredentials,
    InvalidAppId,
    InvalidAppSecret,
    InvalidCode,
    RateLimited,
    UnexpectedResponse,
    WeChatApiError,
    WeChatBusy,
    WeChatUnavailable,
)
from tunnel_broker.wechat.code2session import check_code, parse_response, request_params

APPID = "wx0123456789abcdef"


def answer(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_success_gives_openid_session_key_and_unionid() -> None:
    body = answer({"session_key": "c2Vzc2lvbmtleTEyMzQ1Ng==", "openid": "oA", "unionid": "oU"})
    session = parse_response(200, body, appid=APPID)
    assert session == Code2Session("oA", "c2Vzc2lvbmtleTEyMzQ1Ng==", "oU")


@pytest.mark.parametrize("extra", [{}, {"unionid": None}, {"unionid": ""}, {"errcode": 0}])
def test_success_without_unionid(extra: dict[str, object]) -> None:
    body = answer({"session_key": "k", "openid": "oA", **extra})
    assert parse_response(200, body, appid=APPID).unionid is None


def test_session_key_is_hidden_from_repr_and_str() -> None:
    session = Code2Session("oA", "super-secret-key", None)
    assert "super-secret-key" not in repr(session)
    assert "super-secret-key" not in str(session)
    assert repr(session) == "Code2Session(openid='oA', session_key='***', unionid=None)"


@pytest.mark.parametrize(
    ("errcode", "error_class", "temporary"),
    [
        (40029, InvalidCode, False),
        (41008, InvalidCode, False),
        (40163, CodeAlreadyUsed, False),
        (45011, RateLimited, True),
        (-1, WeChatBusy, True),
        (40013, InvalidAppId, False),
        (40125, InvalidAppSecret, False),
        (40226, WeChatApiError, False),
    ],
)
def test_errcodes_map_to_precise_errors(
    errcode: int, error_class: type[WeChatApiError], temporary: bool
) -> None:
    body = answer({"errcode": errcode, "errmsg": "some text, rid: 1-2-3"})
    with pytest.raises(error_class) as caught:
        parse_response(200, body, appid=APPID)
    assert type(caught.value) is error_class
    assert caught.value.errcode == errcode
    assert caught.value.errmsg == "some text, rid: 1-2-3"
    assert caught.value.appid == APPID
    assert caught.value.temporary is temporary
    assert str(errcode) in str(caught.value)


def test_wrong_appid_and_wrong_secret_are_both_credential_errors() -> None:
    assert issubclass(InvalidAppId, InvalidAppCredentials)
    assert issubclass(InvalidAppSecret, InvalidAppCredentials)


def test_errmsg_never_carries_secrets_even_if_wechat_echoed_them() -> None:
    body = answer({"errcode": 40125, "errmsg": "bad secret hunter2 for ?secret=hunter2&x=1"})
    with pytest.raises(InvalidAppSecret) as caught:
        parse_response(200, body, appid=APPID, hide=("hunter2",))
    assert "hunter2" not in str(caught.value)
    assert caught.value.errmsg == "bad secret *** for ?secret=***&x=1"


def test_long_errmsg_is_truncated() -> None:
    body = answer({"errcode": 40029, "errmsg": "x" * 10_000})
    with pytest.raises(InvalidCode) as caught:
        parse_response(200, body, appid=APPID)
    assert len(caught.value.errmsg) < 300


@pytest.mark.parametrize(
    "body", [b"<html>502 Bad Gateway</html>", b"", b"[1]", b'"ok"', b'{"session_key":"abc']
)
def test_a_body_that_is_not_a_json_object_is_unexpected(body: bytes) -> None:
    with pytest.raises(UnexpectedResponse) as caught:
        parse_response(200, body, appid=APPID, content_type="text/html")
    assert caught.value.status_code == 200
    assert "text/html" in str(caught.value)


def test_a_truncated_success_does_not_leak_the_session_key_into_the_error() -> None:
    with pytest.raises(UnexpectedResponse) as caught:
        parse_response(200, b'{"session_key":"TOPSECRETKEY', appid=APPID)
    assert "TOPSECRETKEY" not in str(caught.value)


def test_a_server_error_page_means_wechat_is_unavailable() -> None:
    with pytest.raises(WeChatUnavailable, match="HTTP 503"):
        parse_response(503, b"<html>Service Unavailable</html>", appid=APPID)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"openid": "oA"},
        {"session_key": "k"},
        {"openid": 1, "session_key": "k"},
        {"openid": "oA", "session_key": ["k"]},
        {"openid": "oA", "session_key": "k", "unionid": 5},
        {"errcode": "40029"},
        {"errcode": True},
    ],
)
def test_json_of_the_wrong_shape_is_unexpected(payload: dict[str, object]) -> None:
    with pytest.raises(UnexpectedResponse):
        parse_response(200, answer(payload), appid=APPID)


def test_success_shape_with_a_non_200_status_is_unexpected() -> None:
    with pytest.raises(UnexpectedResponse):
        parse_response(302, answer({"openid": "oA", "session_key": "k"}), appid=APPID)


def test_request_params_are_wechats() -> None:
    assert request_params("wx1", "s", "c") == {
        "appid": "wx1",
        "secret": "s",
        "js_code": "c",
        "grant_type": "authorization_code",
    }


@pytest.mark.parametrize("code", ["", "x" * 129, "abc\ndef"])
def test_impossible_codes_are_refused_locally(code: str) -> None:
    with pytest.raises(InvalidCode, match="refused locally"):
        check_code(code, appid=APPID)


def test_a_real_looking_code_passes_the_local_check() -> None:
    check_code("081Xb3Ga1Pzdw92tC4Ia1uDTWk2Xb3GG", appid=APPID)

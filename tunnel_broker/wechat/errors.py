"""Errors of the WeChat login building blocks.

Exception tree::

    WeChatError                     any failure of a WeChat login step
    ├── UserDataError               the mini-program's rawData/encryptedData cannot be trusted
    │   ├── InvalidSignature        rawData's signature is not sha1(rawData + session_key)
    │   ├── MalformedUserData       rawData is authentic but not a JSON object
    │   ├── DecryptionFailed        encryptedData/iv do not decrypt to JSON with this session_key
    │   ├── WatermarkMismatch       decrypted, but watermark.appid is not the expected app
    │   └── OpenIdMismatch          decrypted, but openId is not the session's user
    └── Code2SessionError           exchanging a login code at jscode2session failed
        ├── WeChatUnavailable       no answer: network error or timeout (temporary)
        ├── UnexpectedResponse      an answer, but not WeChat's JSON
        └── WeChatApiError          WeChat answered with an errcode
            ├── InvalidCode         40029 / 41008: invalid, expired or missing code
            ├── CodeAlreadyUsed     40163: the code was exchanged before
            ├── RateLimited         45011: minute quota reached (temporary)
            ├── WeChatBusy          -1: system busy, still busy after our retries (temporary)
            └── InvalidAppCredentials   the operator's configuration is wrong
                ├── InvalidAppId        40013
                └── InvalidAppSecret    40125

``temporary`` tells a caller whether trying again later may succeed. No message built here
ever contains an app secret, a session_key or decrypted user data: callers may log
``str(exc)`` and show it to operators.
"""

from __future__ import annotations

from typing import ClassVar


class WeChatError(Exception):
    """Base of every error raised by ``tunnel_broker.wechat``."""

    temporary: ClassVar[bool] = False


class UserDataError(WeChatError):
    """Data handed over by the mini-program failed a check; the client must log in again."""


class InvalidSignature(UserDataError):
    def __init__(self) -> None:
        super().__init__("rawData signature does not match sha1(rawData + session_key)")


class MalformedUserData(UserDataError):
    def __init__(self) -> None:
        super().__init__("rawData is correctly signed but is not a JSON object")


class DecryptionFailed(UserDataError):
    """encryptedData could not be decrypted.

    ``str()`` is the same for every cause, so that a login endpoint that echoes it cannot
    become a padding oracle; ``reason`` names the cause for the operator's logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("encryptedData could not be decrypted with this session_key")
        self.reason = reason


class WatermarkMismatch(UserDataError):
    def __init__(self, expected_appid: str) -> None:
        super().__init__(f"decrypted data's watermark.appid is not {expected_appid!r}")
        self.expected_appid = expected_appid


class OpenIdMismatch(UserDataError):
    def __init__(self) -> None:
        super().__init__("decrypted data's openId is not the openid of this session")


class Code2SessionError(WeChatError):
    """The code could not be exchanged for a session."""


class WeChatUnavailable(Code2SessionError):
    temporary = True


class UnexpectedResponse(Code2SessionError):
    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class WeChatApiError(Code2SessionError):
    """WeChat answered ``{"errcode": ..., "errmsg": ...}``."""

    def __init__(self, errcode: int, errmsg: str, *, appid: str) -> None:
        super().__init__(f"jscode2session for appid {appid!r} failed: errcode {errcode} ({errmsg})")
        self.errcode = errcode
        self.errmsg = errmsg
        self.appid = appid


class InvalidCode(WeChatApiError):
    """The code is wrong, expired (5 minutes), for another app, or missing."""


class CodeAlreadyUsed(WeChatApiError):
    """Codes are single-use; the mini-program must call ``wx.login`` again."""


class RateLimited(WeChatApiError):
    temporary = True


class WeChatBusy(WeChatApiError):
    temporary = True


class InvalidAppCredentials(WeChatApiError):
    """The appid/secret pair is wrong: a configuration error, not the user's fault."""


class InvalidAppId(InvalidAppCredentials):
    pass


class InvalidAppSecret(InvalidAppCredentials):
    pass


ERRCODE_ERRORS: dict[int, type[WeChatApiError]] = {
    -1: WeChatBusy,
    40029: InvalidCode,
    41008: InvalidCode,
    40163: CodeAlreadyUsed,
    45011: RateLimited,
    40013: InvalidAppId,
    40125: InvalidAppSecret,
}


def error_for_errcode(errcode: int, errmsg: str, *, appid: str) -> WeChatApiError:
    """The precise exception for a WeChat errcode; unknown codes give ``WeChatApiError``."""
    return ERRCODE_ERRORS.get(errcode, WeChatApiError)(errcode, errmsg, appid=appid)

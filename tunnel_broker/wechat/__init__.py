"""WeChat mini-program login building blocks: jscode2session, rawData and encryptedData.

The login flow these pieces serve: the mini-program's ``wx.login`` code goes to
``WeChatClient.code_to_session`` (openid, session_key, unionid); ``verify_raw_data`` checks
the user info's signature and ``decrypt_user_data`` opens encryptedData with that session_key.
The simulator (``tunnel_broker.wechat.simulator``) plays WeChat in development and tests.
"""

from tunnel_broker.wechat.client import WECHAT_API_BASE, WeChatClient
from tunnel_broker.wechat.code2session import Code2Session
from tunnel_broker.wechat.crypto import (
    EncryptedUserData,
    check_raw_data_signature,
    decrypt_user_data,
    encrypt_user_data,
    sign_raw_data,
    verify_raw_data,
)
from tunnel_broker.wechat.errors import (
    Code2SessionError,
    CodeAlreadyUsed,
    DecryptionFailed,
    InvalidAppCredentials,
    InvalidAppId,
    InvalidAppSecret,
    InvalidCode,
    InvalidSignature,
    MalformedUserData,
    OpenIdMismatch,
    RateLimited,
    UnexpectedResponse,
    UserDataError,
    WatermarkMismatch,
    WeChatApiError,
    WeChatBusy,
    WeChatError,
    WeChatUnavailable,
)
from tunnel_broker.wechat.redaction import SecretQueryFilter, install_log_redaction
from tunnel_broker.wechat.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "WECHAT_API_BASE",
    "Code2Session",
    "Code2SessionError",
    "CodeAlreadyUsed",
    "DecryptionFailed",
    "EncryptedUserData",
    "InvalidAppCredentials",
    "InvalidAppId",
    "InvalidAppSecret",
    "InvalidCode",
    "InvalidSignature",
    "MalformedUserData",
    "OpenIdMismatch",
    "RateLimited",
    "RetryPolicy",
    "SecretQueryFilter",
    "UnexpectedResponse",
    "UserDataError",
    "WatermarkMismatch",
    "WeChatApiError",
    "WeChatBusy",
    "WeChatClient",
    "WeChatError",
    "WeChatUnavailable",
    "check_raw_data_signature",
    "decrypt_user_data",
    "encrypt_user_data",
    "install_log_redaction",
    "sign_raw_data",
    "verify_raw_data",
]

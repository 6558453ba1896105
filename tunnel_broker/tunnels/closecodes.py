"""WebSocket close codes the broker sends, with the one place that explains them.

Mini-program developers see only a number and a short reason on their socket, so every
code the broker can send is listed here with the action a client should take.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    TOKEN_INVALID = 4401
    REJECTED = 4403
    TOKEN_EXPIRED = 4408
    REPLACED = 4409
    RESUME_BUFFER_FULL = 4410
    QUOTA_EXCEEDED = 4429


CLOSE_CODE_EXPLANATIONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "Closed normally (by the client, or by the business server).",
    CloseCode.GOING_AWAY: "Idle timeout or maximum connection lifetime; reconnect if needed.",
    CloseCode.PROTOCOL_ERROR: (
        "A malformed frame broke the WebSocket protocol (or the reliable protocol); fix the client."
    ),
    CloseCode.INVALID_DATA: "A text message was not valid UTF-8; send binary frames for bytes.",
    CloseCode.POLICY_VIOLATION: "A limit was exceeded (message rate, tunnels per user); back off.",
    CloseCode.MESSAGE_TOO_BIG: "A frame exceeded the app's max_message_bytes.",
    CloseCode.INTERNAL_ERROR: "The broker failed unexpectedly; reconnect with backoff.",
    CloseCode.SERVICE_RESTART: "The broker is restarting; reconnect (another pod will take it).",
    CloseCode.TRY_AGAIN_LATER: "The broker is overloaded for this app; reconnect with backoff.",
    CloseCode.TOKEN_INVALID: "The connect token is missing, malformed, tampered or unknown.",
    CloseCode.REJECTED: "The business server rejected the connection.",
    CloseCode.TOKEN_EXPIRED: "The connect token expired; ask the business server for a new one.",
    CloseCode.REPLACED: "A newer connection took this tunnel over; do not reconnect this socket.",
    CloseCode.RESUME_BUFFER_FULL: (
        "Reliable protocol: more pushes waited for the client's acknowledgement than the "
        "app's resume buffer holds; the tunnel ended. Connect anew (acknowledge pushes)."
    ),
    CloseCode.QUOTA_EXCEEDED: (
        "The app reached a quota: its max_tunnels open (`tunnel_quota`) or its messages "
        "for the period (`message_quota`). Do not reconnect at once; the business server "
        "decides when to try again."
    ),
}


# Closes for abuse: what the client sends after one is not relayed (nor after a
# rejection, 4403). After any other close (a takeover, a shutdown, the business server's),
# messages the client sent before it saw the close frame still reach the business
# server, before ``tunnel.closed``. Past the message quota nothing more may be relayed
# either: the quota refused the first message, and those after it are beyond it too.
ABUSE_REASONS = frozenset({"rate_limited", "message_too_big", "message_quota"})

_LABELLED = frozenset(int(code) for code in CloseCode) | {1005, 1006}


def metric_label(code: int) -> str:
    """The ``code`` label of a close in metrics: the broker's own codes (and 1005/1006) by
    number, every other code by its range, so that clients, which choose the codes they
    close with, cannot create label values at will."""
    if code in _LABELLED:
        return str(code)
    if 1000 <= code <= 1999:
        return "1xxx"
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"

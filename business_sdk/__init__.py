"""Python SDK for business servers using Tunnel Broker.

Call the broker (``TunnelBroker`` async, ``SyncTunnelBroker`` blocking)::

    async with TunnelBroker("https://broker.example", api_key) as broker:
        tunnel = await broker.create_tunnel("user-1", identity={"nick": "Ann"})
        await broker.send(Target.users("user-1"), "hello")

Receive its webhooks (``WebhookHandler``, mounted with ``business_sdk.integrations.*``)::

    hooks = WebhookHandler(secrets=["whsec_..."])

    @hooks.on_message
    async def echo(event: TunnelMessage, actions: Actions) -> None:
        actions.reply(event.text or "")

Everything public is exported here; modules starting with ``_`` are private.
"""

from business_sdk._actions import Actions
from business_sdk._async_client import TunnelBroker
from business_sdk._events import (
    TunnelClosed,
    TunnelConnected,
    TunnelEvent,
    TunnelMessage,
    UnknownEvent,
    parse_events,
)
from business_sdk._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConnectError,
    FieldError,
    InvalidSecretError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    TunnelBrokerError,
    TunnelNotConnectedError,
    UnexpectedResponseError,
    ValidationFailedError,
    WebhookError,
    WebhookPayloadError,
    WebhookVerificationError,
)
from business_sdk._handler import WebhookBatch, WebhookHandler, WebhookResponse
from business_sdk._models import (
    CreatedTunnel,
    Message,
    SendResult,
    Session,
    TunnelInfo,
    TunnelPage,
)
from business_sdk._payload import Data
from business_sdk._retry import RetryPolicy
from business_sdk._signature import WebhookVerifier
from business_sdk._sync_client import SyncTunnelBroker
from business_sdk._targets import Target
from business_sdk._version import __version__

__all__ = [
    "APIError",
    "Actions",
    "AuthenticationError",
    "BadRequestError",
    "ClientError",
    "ConnectError",
    "CreatedTunnel",
    "Data",
    "FieldError",
    "InvalidSecretError",
    "Message",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RequestTimeoutError",
    "RetryPolicy",
    "SendResult",
    "ServerError",
    "ServiceUnavailableError",
    "Session",
    "SyncTunnelBroker",
    "Target",
    "TransportError",
    "TunnelBroker",
    "TunnelBrokerError",
    "TunnelClosed",
    "TunnelConnected",
    "TunnelEvent",
    "TunnelInfo",
    "TunnelMessage",
    "TunnelNotConnectedError",
    "TunnelPage",
    "UnexpectedResponseError",
    "UnknownEvent",
    "ValidationFailedError",
    "WebhookBatch",
    "WebhookError",
    "WebhookHandler",
    "WebhookPayloadError",
    "WebhookResponse",
    "WebhookVerificationError",
    "WebhookVerifier",
    "__version__",
    "parse_events",
]

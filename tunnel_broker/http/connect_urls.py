"""Issuing a tunnel: its request checked against the app's limits (and its tunnel quota),
its claims signed into a connect URL. Business servers (API key) and mini-programs
(session) both end here."""

from __future__ import annotations

import json
import secrets
import time

from starlette.responses import JSONResponse, Response

from tunnel_broker.apps import App
from tunnel_broker.errors import ApiError, BackendUnavailable, TunnelQuotaExceeded
from tunnel_broker.http.schemas import CreateTunnelRequest
from tunnel_broker.node import Node
from tunnel_broker.timestamps import iso_time
from tunnel_broker.tunnels.tokens import ConnectClaims


def mint_tunnel(node: Node, app: App, body: CreateTunnelRequest) -> Response:
    """Answer with a new tunnel's id and connect URL (201)."""
    limits = app.limits
    ttl = body.ttl or limits.default_tunnel_ttl_seconds
    if ttl > limits.max_tunnel_ttl_seconds:
        raise ApiError.invalid(
            "ttl",
            "above the app's max_tunnel_ttl_seconds",
            f"ttl is above this app's maximum of {limits.max_tunnel_ttl_seconds}s",
        )
    if len(body.groups) > limits.max_groups_per_tunnel:
        raise ApiError.invalid(
            "groups", "too many groups", f"at most {limits.max_groups_per_tunnel} groups per tunnel"
        )
    claims_size = len(json.dumps([body.identity, body.meta, body.groups], separators=(",", ":")))
    if claims_size > limits.max_token_claims_bytes:
        raise ApiError.invalid(
            "identity",
            "identity/meta/groups too large",
            f"identity, meta and groups together exceed {limits.max_token_claims_bytes} bytes",
        )
    expires_at = int(time.time()) + ttl
    tunnel_id = "tun_" + secrets.token_urlsafe(16)
    claims = ConnectClaims(
        app.id, tunnel_id, body.user_id, expires_at, body.identity, body.meta, tuple(body.groups)
    )
    token = node.tokens.mint(claims)
    connect_url = f"{node.settings.connect_base_url}/v1/connect?token={token}"
    return JSONResponse(
        {"tunnel_id": tunnel_id, "connect_url": connect_url, "expires_at": iso_time(expires_at)},
        status_code=201,
    )


async def check_tunnel_quota(node: Node, app: App) -> None:
    """Refuse a new tunnel (429 ``tunnel_quota_exceeded``) of an app that has its
    ``max_tunnels`` open already, all pods together: a connect URL its client could not
    use. A look at the count only: the connect's registration is the authority (it
    refuses 4429 beyond the quota, atomically), so without Redis the URL is issued."""
    max_tunnels = app.limits.max_tunnels
    if max_tunnels is None:
        return
    try:
        count = await node.backend.count_app(app.id)
    except BackendUnavailable:
        return
    if count >= max_tunnels:
        node.metrics.quota_refusals.labels(app.id, "tunnels").inc()
        raise TunnelQuotaExceeded(
            f"the app has its max_tunnels ({max_tunnels}) open; "
            "a tunnel must close before another can connect"
        )

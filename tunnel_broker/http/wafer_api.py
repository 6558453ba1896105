"""The Wafer tunnel service's HTTP side: ``POST /wafer/{app_id}/get/wsurl`` and
``POST /wafer/{app_id}/ws/push``, under the base URL an operator gives the business
server (its SDK appends the paths).

Every answer is HTTP 200 in the legacy shape, ``{"code": 0, ...}`` or ``{"code": N,
"message"}``: both SDKs read ``code``, and qcloud's turns anything but a 200 into an
error without its reason. Codes are in ``wafer/envelope.py`` and docs/api.md.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.apps import App
from tunnel_broker.errors import ApiError, BackendUnavailable
from tunnel_broker.http.requests import charge_request, node_of, read_body
from tunnel_broker.node import Node
from tunnel_broker.shapes import check_id
from tunnel_broker.targets import Target
from tunnel_broker.tunnels.tokens import ConnectClaims
from tunnel_broker.wafer import envelope, packets
from tunnel_broker.wafer.envelope import EnvelopeError
from tunnel_broker.wafer.events import RECEIVE_URL, TUNNEL_PREFIX
from tunnel_broker.wafer.settings import WaferSettings

WAFER_CONNECT_PATH = "/wafer/v1/connect"
MAX_PACKETS = 100  # per /ws/push call (the SDKs send one)
MAX_IDS = 1000  # tunnel ids per packet


async def _signed(request: Request, node: Node) -> tuple[App, WaferSettings, Any]:
    """The app, its Wafer settings and the verified ``data`` of the request."""
    app = node.apps.get(request.path_params["app_id"])
    if app is None or app.wafer is None:
        raise EnvelopeError(envelope.NOT_WAFER_APP, "no app in Wafer mode at this URL")
    try:
        charge_request(node, app)
    except ApiError as exc:
        raise EnvelopeError(envelope.RATE_LIMITED, exc.detail) from None
    try:
        body = await read_body(request, node)
    except ApiError as exc:
        raise EnvelopeError(envelope.TOO_LARGE, exc.detail) from None
    opened = envelope.open_request(body, app.wafer.signing_keys, app.wafer.tc_ids)
    node.usage.of(app.id).api_calls += 1  # usage metering: signed calls, like API-key ones
    return app, app.wafer, opened.value


def _legacy(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request, node_of(request)))
        except EnvelopeError as refused:
            return JSONResponse(envelope.refusal(refused))
        except BackendUnavailable:
            unavailable = EnvelopeError(envelope.UNAVAILABLE, "shared state unavailable; retry")
            return JSONResponse(envelope.refusal(unavailable))

    endpoint.__name__ = handler.__name__
    return endpoint


async def get_wsurl(request: Request, node: Node) -> dict[str, Any]:
    """A new tunnel for the business server: its id and the URL its client connects to
    (signed, as qcloud's SDK checks). Its events go to the ``receiveUrl`` given here."""
    app, wafer, data = await _signed(request, node)
    receive_url = data.get("receiveUrl") if isinstance(data, dict) else None
    if not isinstance(receive_url, str) or len(receive_url) > 2048:
        raise EnvelopeError(envelope.BAD_DATA, "data needs a receiveUrl (a string)")
    if wafer.receive_url(receive_url) is None:
        raise EnvelopeError(
            envelope.BAD_DATA, "receiveUrl is not on one of the app's business hosts"
        )
    tunnel_id = TUNNEL_PREFIX + secrets.token_urlsafe(16)
    claims = ConnectClaims(
        app.id,
        tunnel_id,
        tunnel_id,  # the tunnel service never knows the user: each tunnel its own
        int(time.time()) + wafer.connect_url_ttl_seconds,
        meta={RECEIVE_URL: receive_url},
    )
    connect_url = f"{node.settings.connect_base_url}{WAFER_CONNECT_PATH}?token="
    connect_url += node.tokens.mint(claims)
    answer = {"tunnelId": tunnel_id, "connectUrl": connect_url}
    return envelope.answer(answer, key=wafer.signing_keys[0])


def _tunnel_ids(packet: dict[str, Any]) -> tuple[str, ...]:
    ids = packet.get("tunnelIds")
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_IDS:
        raise EnvelopeError(envelope.BAD_DATA, f"tunnelIds must list 1-{MAX_IDS} tunnel ids")
    try:
        return tuple(check_id(i) for i in ids)
    except (TypeError, ValueError):
        raise EnvelopeError(envelope.BAD_DATA, "tunnelIds must be tunnel ids (strings)") from None


async def ws_push(request: Request, node: Node) -> dict[str, Any]:
    """Send packets to tunnels: ``message`` (content: JSON object text) or ``close``
    (the client is told first, so it does not reconnect). Answers which of the ids are
    not connected."""
    app, _, data = await _signed(request, node)
    if not isinstance(data, list) or not 0 < len(data) <= MAX_PACKETS:
        raise EnvelopeError(envelope.BAD_DATA, f"data must list 1-{MAX_PACKETS} packets")
    checked: list[tuple[str, tuple[str, ...], str | None]] = []
    for packet in data:  # all checked before any is sent
        kind = packet.get("type") if isinstance(packet, dict) else None
        content = packet.get("content") if isinstance(packet, dict) else None
        if kind == packets.MESSAGE:
            if not isinstance(content, str) or not packets.is_json_object(content):
                raise EnvelopeError(envelope.BAD_DATA, "a message's content is JSON object text")
            if len(content.encode()) > app.limits.max_message_bytes:
                raise EnvelopeError(envelope.TOO_LARGE, "a message's content is too large")
        elif kind != packets.CLOSE:
            raise EnvelopeError(envelope.BAD_DATA, "a packet's type is 'message' or 'close'")
        assert isinstance(packet, dict)
        checked.append((kind, _tunnel_ids(packet), content))
    invalid: list[str] = []
    for kind, ids, content in checked:
        target = Target("tunnels", ids)
        if kind == packets.MESSAGE:
            assert content is not None
            invalid += await node.backend.push(app.id, target, packets.message_frame(content))
        else:
            invalid += await node.backend.push(app.id, target, packets.CLOSE)
            await node.backend.close(app.id, target, 1000, "closed_by_business")
    return envelope.answer({"invalidTunnelIds": list(dict.fromkeys(invalid))})


routes = [
    Route("/wafer/{app_id}/get/wsurl", _legacy(get_wsurl), methods=["POST"]),
    Route("/wafer/{app_id}/ws/push", _legacy(ws_push), methods=["POST"]),
]

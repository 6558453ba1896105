"""The socket of a Wafer tunnel (``/wafer/v1/connect``): the legacy packets on top of the
native tunnel's life (registration, order, events, limits), which stays the same.

The client speaks text packets (``wafer/packets.py``): ``message:{...}`` is relayed as the
event's content, exactly as sent; ``ping`` is answered ``pong`` here and relayed nowhere
(the SDKs' heartbeat: a WebSocket pong does not count for them); ``close`` announces the
client's own close, which follows. A ``message`` whose content is not a JSON object, or a
binary frame, closes the socket with 1007: the business servers' SDKs throw on one.
"""

from __future__ import annotations

from tunnel_broker.apps import App
from tunnel_broker.tunnels.closecodes import CloseCode
from tunnel_broker.tunnels.connect import ConnectHandler, Scope
from tunnel_broker.tunnels.tunnel import Tunnel
from tunnel_broker.wafer import packets
from tunnel_broker.wafer.events import is_wafer_tunnel


class WaferConnectHandler(ConnectHandler):
    def _subprotocol(self, scope: Scope) -> str | None:
        return None  # the legacy packets only

    def _speaks_for(self, app: App, tunnel_id: str) -> bool:
        return app.wafer is not None and is_wafer_tunnel(tunnel_id)

    def _opened(self, tunnel: Tunnel) -> None:
        wafer = tunnel.app.wafer
        if wafer is not None and wafer.heartbeat_seconds is not None:
            # First, before any ping: the SDKs leave a pending pong timer running if the
            # period changes while one is outstanding.
            tunnel.push(packets.timeout_frame(wafer.heartbeat_seconds))

    def _inbound(self, tunnel: Tunnel, frame: str | bytes) -> str | bytes | None:
        if not isinstance(frame, str):
            tunnel.close(CloseCode.INVALID_DATA, "invalid_packet")
            return None
        packet = packets.parse(frame)
        if packet.type == packets.MESSAGE:
            if packet.content is not None and packets.is_json_object(packet.content):
                return packet.content
            tunnel.close(CloseCode.INVALID_DATA, "invalid_packet")
        elif packet.type == packets.PING:
            tunnel.push(packets.PONG)
        return None  # close (the client closes next), pong, unknown: ignored, as the SDKs do

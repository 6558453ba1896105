"""An app's Wafer mode: what the legacy SDKs need that a native app does not have.

Opt-in per app (``wafer`` in the apps file, the ``apps`` CLI, or Redis-stored apps). It
never weakens the app's native API: the legacy scheme is only accepted on the Wafer
endpoints, from the business servers listed here.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunnel_broker.wafer.envelope import tc_id

MIN_KEY_LENGTH = 8


class WaferSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The tunnel signature keys the business servers are configured with; the first
    # signs the broker's answers and events, any of them is accepted (rotation).
    signing_keys: Annotated[list[str], Field(min_length=1, max_length=4, repr=False)]
    # The hosts the business servers are configured with (``ServerHost`` /
    # ``serverHost``): their md5 is the ``tcId`` they send, and events go only there.
    business_hosts: Annotated[list[str], Field(min_length=1, max_length=64)]
    # Replaces scheme, host and port of every receive URL: qcloud's SDK cannot put a port
    # in it and uses the tunnel service's scheme, so its business server often listens
    # somewhere else than the URL it sends says.
    receive_url_origin: Annotated[str, Field(pattern=r"^https?://[^/\s?#]+$")] | None = None
    # Sent to each new socket as ``timeout:N``: the client's heartbeat period (default
    # 15 s in the SDKs).
    heartbeat_seconds: Annotated[float, Field(ge=1, le=600)] | None = None
    # How long a connect URL from ``/get/wsurl`` may be used to connect.
    connect_url_ttl_seconds: Annotated[int, Field(ge=10, le=86400)] = 600

    @field_validator("signing_keys")
    @classmethod
    def _keys_usable(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < MIN_KEY_LENGTH or len(key) > 256 or any(c.isspace() for c in key):
                raise ValueError(
                    f"each signing key needs {MIN_KEY_LENGTH}-256 non-space characters"
                )
        return keys

    @field_validator("business_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or len(host) > 255 or any(c in host for c in " /?#@\t\r\n"):
                raise ValueError("each business host is a host name, as the SDK is given it")
        return hosts

    @property
    def tc_ids(self) -> frozenset[str]:
        return frozenset(tc_id(host) for host in self.business_hosts)

    def receive_url(self, url: str) -> str | None:
        """Where to post the events of a tunnel requested with ``url``; None if it does
        not name one of the business hosts (the broker posts nowhere else)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        named = {h.lower() for h in self.business_hosts}
        host = parts.hostname.lower()
        if host not in named and f"{host}:{port}" not in named:
            return None
        if self.receive_url_origin is None:
            return url
        rest = parts.path or "/"
        return self.receive_url_origin + rest + (f"?{parts.query}" if parts.query else "")

"""Routing and state backends: where tunnels are registered and how pushes reach them.

``memory`` serves a single process; a Redis backend spreads the same interface over many
broker pods. Code above ``Backend`` never asks which one it runs on.
"""

from tunnel_broker.backend.base import Backend, BackendUnavailable, Page, TunnelRecord
from tunnel_broker.backend.memory import MemoryBackend

__all__ = ["Backend", "BackendUnavailable", "MemoryBackend", "Page", "TunnelRecord"]

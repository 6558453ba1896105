"""Tunnel Broker: a self-hosted WebSocket tunnel broker for WeChat mini-programs.

The broker holds every client WebSocket ("tunnel"), turns tunnel events into signed,
batched HTTP webhooks for the business server, and carries out the business server's
pushes and actions. See README.md and docs/ for the user-facing description.
"""

__version__ = "0.1.0"

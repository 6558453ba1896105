"""Wafer compatibility: the tunnel service and session service that Tencent's Wafer SDKs
expect, so that mini-programs and business servers built on them run unmodified.

The wire protocol is in docs/migrating-from-wafer.md (and, as read from the published
packages, ``shared/design/wafer-protocol.md``). Pure parts here (``envelope`` for the
signed requests and answers, ``packets`` for the socket frames, ``settings`` for an app's
Wafer mode); the endpoints, sockets and event delivery use them.
"""

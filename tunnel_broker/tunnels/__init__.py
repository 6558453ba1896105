"""Tunnels: the client side of the broker.

``tokens`` (what a connect URL carries), ``connect`` (the life of one socket, handshake to
close), ``tunnel`` (one open tunnel's state), ``writer`` (its socket's send side), ``hub``
(the tunnels open on this process) and ``closecodes`` (what a client is told at the end).
"""

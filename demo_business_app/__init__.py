"""A demo business server for Tunnel Broker: chat rooms, rock-paper-scissors and a shared
drawing board, built only on ``business_sdk`` and the broker's public HTTP API.

It is what a newcomer runs first (``scripts/demo.sh``), so it doubles as the reference for
writing a business server: no socket code, no tunnel-id-to-user map for routing, every
tunnel event arrives as a signed webhook and every push is one HTTP call.

Modules: ``chat``, ``rps`` and ``board`` hold the pure rules (tested without servers);
``arena`` runs games in time; ``hooks`` maps tunnel events to them; ``web`` serves the
page and the login/tunnel endpoints; ``launch`` starts broker + simulator + demo together.
"""

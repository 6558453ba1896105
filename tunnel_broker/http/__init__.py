"""HTTP: the ASGI application and everything a business server or mini-program calls.

``app`` (the ASGI entry: WebSockets to ``tunnels.connect``, the rest to Starlette),
``requests`` (authentication, budgets, bodies), ``problems`` (errors as problem details),
``api`` (tunnels, pushes, groups, presence), ``login`` (WeChat login and sessions),
``ops`` (health, readiness, metrics, OpenAPI), ``schemas`` and ``openapi``.
"""

"""Ready-made webhook endpoints for web frameworks.

Each module imports its framework, so import only the one you use:
``business_sdk.integrations.starlette`` (Starlette and FastAPI),
``business_sdk.integrations.flask`` and ``business_sdk.integrations.django``.
"""

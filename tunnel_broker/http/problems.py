"""Every failure of an HTTP request leaves as RFC 9457 problem details.

``BrokerError`` renders itself; these handlers are the one place Starlette's own errors
and unexpected exceptions are mapped into the same shape.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tunnel_broker.errors import ApiError, BrokerError

logger = logging.getLogger("tunnel_broker.http")


def problem_response(error: BrokerError) -> JSONResponse:
    return JSONResponse(
        error.problem(),
        status_code=error.spec.status,
        media_type="application/problem+json",
        headers=error.headers or None,
    )


async def broker_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BrokerError)
    return problem_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem_response(
            ApiError("method_not_allowed", f"{request.method} is not allowed here")
        )
    return problem_response(ApiError("not_found", f"no endpoint at {request.url.path}"))


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem_response(ApiError("internal_error", "the broker failed; retry later"))


EXCEPTION_HANDLERS = {
    BrokerError: broker_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}

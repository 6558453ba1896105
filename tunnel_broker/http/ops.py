"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tunnel_broker.http.openapi import openapi_document
from tunnel_broker.http.requests import node_of
from tunnel_broker.metrics import CONTENT_TYPE


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    node = node_of(request)
    if node.ready():
        return JSONResponse({"status": "ready"})
    why = "draining" if node.draining else "starting" if not node.started else "backend_unavailable"
    return JSONResponse({"status": "unready", "reason": why}, status_code=503)


async def metrics(request: Request) -> Response:
    return Response(node_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(node_of(request).settings.public_url))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

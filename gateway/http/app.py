"""`build_http_app(settings, calls)`: the gateway's HTTP side as one Starlette app.

Route order matters: the hand-written routes (OpenAI-compatible, file upload and download, ops,
pages) come first; every other path goes to `annotated_routes`, which serves whatever the
`google.api.http` annotations declare and answers JSON 404, or 405 with an Allow header listing the
methods the path serves (annotated or hand-written), otherwise.

TLS is the caller's business: `start_gateway` runs this app with uvicorn and passes
`ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file` when they are set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from capmesh.gateway.server.auth.guard import Guard
from capmesh.gateway.server.auth.middleware import AuthMiddleware
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.http import annotated_routes, files, jobs, openai_compat, ops
from capmesh.gateway.server.http.calls import GatewayCalls
from capmesh.gateway.server.http.context import BridgeContext, mark_route
from capmesh.gateway.server.http.openapi import openapi_document
from capmesh.gateway.server.http.random_weights import RandomWeightsHeader
from capmesh.gateway.server.registry.registry import Registry
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.telemetry import TracingMiddleware

STATIC = Path(__file__).resolve().parent / "static"
# The catch-all takes every method, so that one a path does not serve gets a JSON 405 with Allow.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def build_http_app(
    settings: GatewaySettings,
    calls: GatewayCalls,
    *,
    file_store: FileStore,
    redis: Any = None,
    guard: Guard | None = None,
    registry: Registry | None = None,
) -> Starlette:
    """The HTTP app of a gateway: every gRPC method it reaches goes through `calls`, in-process,
    but file bytes, which go straight to and from `file_store`; `redis` (when the gateway uses
    one) is checked by /readyz; `guard` checks keys and quotas; `registry` tells the OpenAI text
    routes when the answering model has random weights."""
    bridge = BridgeContext(settings=settings, calls=calls, file_store=file_store, redis=redis)
    routes = [
        Route("/healthz", ops.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", ops.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", ops.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET", "HEAD"]),
        Route("/docs", page("docs.html"), methods=["GET", "HEAD"]),
        Route("/", page("index.html"), methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        Route("/v1/chat/completions", openai_compat.chat_completions, methods=["POST"]),
        Route("/v1/audio/speech", openai_compat.audio_speech, methods=["POST"]),
        Route("/v1/images/generations", openai_compat.images_generations, methods=["POST"]),
        Route("/v1/models", openai_compat.list_models, methods=["GET"]),
        Route("/v1/completions", openai_compat.completions, methods=["POST"]),
        Route("/v1/embeddings", openai_compat.embeddings, methods=["POST"]),
        Route("/v1/files", files.upload, methods=["POST"]),
        Route("/v1/files/{file_id}:download", files.download, methods=["GET", "HEAD"]),
        # Job events over WebSocket: the SSE route's path upgraded, and one socket for many jobs.
        WebSocketRoute("/v1/jobs/{job_id}/events", jobs.job_events_socket),
        WebSocketRoute("/v1/jobs:events", jobs.jobs_events_socket),
        Route("/{path:path}", annotated_routes.dispatch, methods=ANY_METHOD),
    ]
    # Tracing (when on) outermost, so that the span covers the whole request and is current in it.
    middleware = [Middleware(TracingMiddleware)] if telemetry.enabled() else []
    middleware.append(Middleware(ops.MetricsMiddleware))
    if guard is not None and guard.enforcing:
        middleware.append(Middleware(AuthMiddleware, guard=guard))
    if registry is not None:
        middleware.append(Middleware(RandomWeightsHeader, registry=registry))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.bridge = bridge
    app.state.keys_required = guard is not None and guard.enforcing  # the OpenAPI document says so
    app.state.guard = guard  # the WebSocket routes check keys themselves (the middleware sees only HTTP)
    return app


async def openapi_json(request: Request) -> Response:
    mark_route(request, "/openapi.json")
    return JSONResponse(openapi_document(keys_required=request.app.state.keys_required))


def page(name: str):
    async def serve(request: Request) -> Response:
        mark_route(request, request.url.path)
        return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    return serve

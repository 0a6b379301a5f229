"""`build_http_app(settings, calls)`: the gateway's HTTP side as one Starlette app.

Route order matters: the hand-written routes (OpenAI-compatible, file upload and download, ops,
pages) come first; every other path goes to `annotated_routes`, which serves whatever the
`google.api.http` annotations declare and answers JSON 404/405 otherwise.

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
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from capmesh.gateway.server.auth import ApiKeyMiddleware
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.http import annotated_routes, files, openai_compat, ops
from capmesh.gateway.server.http.calls import GatewayCalls
from capmesh.gateway.server.http.context import BridgeContext, mark_route
from capmesh.gateway.server.http.openapi import openapi_document

STATIC = Path(__file__).resolve().parent / "static"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def build_http_app(settings: GatewaySettings, calls: GatewayCalls, *, redis: Any = None) -> Starlette:
    """The HTTP app of a gateway: every gRPC method it reaches goes through `calls`, in-process;
    `redis` (when the gateway uses one) is checked by /readyz."""
    bridge = BridgeContext(settings=settings, calls=calls, redis=redis)
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
        Route("/v1/files", files.upload, methods=["POST"]),
        Route("/v1/files/{file_id}:download", files.download, methods=["GET", "HEAD"]),
        Route("/{path:path}", annotated_routes.dispatch, methods=ALL_METHODS),
    ]
    middleware = [Middleware(ops.MetricsMiddleware)]
    if settings.api_keys:
        middleware.append(Middleware(ApiKeyMiddleware, keys=settings.api_keys))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.bridge = bridge
    return app


async def openapi_json(request: Request) -> Response:
    mark_route(request, "/openapi.json")
    return JSONResponse(openapi_document())


def page(name: str):
    async def serve(request: Request) -> Response:
        mark_route(request, request.url.path)
        return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    return serve

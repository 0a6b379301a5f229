"""What every HTTP handler shares: the in-process gRPC calls, the settings, and request plumbing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.http.calls import GatewayCalls, forwarded_metadata
from capmesh.gateway.server.http.errors import HttpError, make_error

ROUTE_SCOPE_KEY = "capmesh.route"


@dataclass
class BridgeContext:
    """The HTTP side's dependencies."""

    settings: GatewaySettings
    calls: GatewayCalls
    file_store: FileStore  # the FileService's store: file bytes skip the in-process calls (see files.py)
    redis: Any = None  # redis.asyncio.Redis when the gateway uses Redis (checked by /readyz)

    def metadata(self, request: Request) -> tuple[tuple[str, str], ...]:
        return forwarded_metadata(request.headers)


def context_of(request: Request) -> BridgeContext:
    return request.app.state.bridge


def mark_route(request: Request, route: str) -> None:
    """Names the route for metrics (a template, never the raw path, to bound label values)."""
    request.scope[ROUTE_SCOPE_KEY] = route


def error_response(error: HttpError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.http_status, headers=error.response_headers())


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(limit: int) -> HttpError:
    return make_error(
        "RESOURCE_EXHAUSTED", f"the request body is larger than {limit} bytes", reason="BODY_TOO_LARGE", http_status=413
    )

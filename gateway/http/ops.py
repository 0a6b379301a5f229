"""Operations endpoints: liveness, readiness and Prometheus metrics, plus the metrics middleware."""

from __future__ import annotations

import asyncio
import time

from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capmesh.gateway.server import metrics
from capmesh.gateway.server.http.context import ROUTE_SCOPE_KEY, BridgeContext, context_of, mark_route

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
READY_CHECK_TIMEOUT_S = 2.0


async def healthz(request: Request) -> Response:
    """The process lives and its event loop answers."""
    mark_route(request, "/healthz")
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The gateway's own dependencies answer: its gRPC services say SERVING (the health service,
    which turns NOT_SERVING when the gateway stops) and Redis answers when configured; 503 naming
    the ones that do not."""
    mark_route(request, "/readyz")
    context = context_of(request)
    checks = {"grpc": _grpc_serving(context)}
    if context.redis is not None:
        checks["redis"] = context.redis.ping()
    names = list(checks)
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(c, READY_CHECK_TIMEOUT_S) for c in checks.values()), return_exceptions=True
    )
    results = {
        name: ("ok" if not isinstance(outcome, BaseException) else f"{type(outcome).__name__}: {outcome}")
        for name, outcome in zip(names, outcomes, strict=True)
    }
    ready = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": results}, status_code=200 if ready else 503
    )


async def _grpc_serving(context: BridgeContext) -> None:
    raw = await context.calls.unary(
        HEALTH_CHECK, health_pb2.HealthCheckRequest(service="").SerializeToString(), timeout=READY_CHECK_TIMEOUT_S
    )
    status = health_pb2.HealthCheckResponse.FromString(raw).status
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


async def metrics_endpoint(request: Request) -> Response:
    mark_route(request, "/metrics")
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts requests and times them (to the end of the body, streams included) per route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get(ROUTE_SCOPE_KEY) or _static_route(scope["path"])
            method = scope["method"]
            metrics.http_requests.labels(route=route, method=method, status=str(status["code"])).inc()
            metrics.http_latency.labels(route=route, method=method).observe(time.perf_counter() - started)


def _static_route(path: str) -> str:
    if path.startswith("/static/"):
        return "/static"
    return path if path in {"/", "/docs", "/openapi.json"} else "unmatched"

"""Optional API keys on both of the gateway's ports.

When `settings.api_keys` is set, every call must present one of the keys:
- gRPC: metadata `authorization: Bearer <key>` or `x-api-key: <key>` (`ApiKeyInterceptor`);
  `grpc.health.v1.Health` stays open so that probes and load balancers need no key.
- HTTP: header `Authorization: Bearer <key>` or `X-API-Key: <key>` (`ApiKeyMiddleware`);
  `/healthz`, `/readyz`, `/metrics` and the static pages (console, docs, OpenAPI document) stay
  open; the pages hold no data, and their API calls send the key the user enters.
A missing key and a wrong key are both UNAUTHENTICATED (HTTP 401), with ErrorInfo reasons
API_KEY_MISSING and API_KEY_INVALID. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping

import grpc

from capmesh.services.runtime.errors import Unauthenticated
from capmesh.services.runtime.interceptor import HandlerInterceptor, rebuild_handler
from capmesh.services.runtime.status import abort_with_error

EXEMPT_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)
EXEMPT_HTTP_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json", "/favicon.ico"})
EXEMPT_HTTP_PREFIXES = ("/static/",)
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/audio/speech", "/v1/images/generations", "/v1/models"})


class ApiKeys:
    """The configured keys and the check every port shares."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(k.encode() for k in keys if k)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None, api_key: str | None) -> Unauthenticated | None:
        """None when a presented key is valid; otherwise the error to answer with."""
        presented = api_key or _bearer(authorization)
        if not presented:
            return Unauthenticated(
                "an API key is required: send 'authorization: Bearer <key>' or 'x-api-key: <key>'",
                reason="API_KEY_MISSING",
            )
        candidate = presented.encode()
        # Compare against every key so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            return Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return None

    def check_headers(self, headers: Mapping[str, str]) -> Unauthenticated | None:
        return self.check(headers.get("authorization"), headers.get("x-api-key"))


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ApiKeyInterceptor(HandlerInterceptor):
    """Refuses calls without a valid key with UNAUTHENTICATED; health checks pass freely."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = ApiKeys(keys)

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if details.method.startswith(EXEMPT_GRPC_PREFIXES):
            return handler
        metadata = {key: value for key, value in (details.invocation_metadata or ()) if isinstance(value, str)}
        error = self._keys.check_headers(metadata)
        if error is None:
            return handler
        return _refusing_handler(handler, error)


def _refusing_handler(handler: grpc.RpcMethodHandler, error: Unauthenticated) -> grpc.RpcMethodHandler:
    async def refuse(request, context):
        await abort_with_error(context, error)

    async def refuse_stream(request, context):
        await abort_with_error(context, error)
        yield  # pragma: no cover - never reached; makes this an async generator

    return rebuild_handler(handler, lambda _: refuse, lambda _: refuse_stream)


class ApiKeyMiddleware:
    """ASGI middleware: 401 without a valid key, in OpenAI's error shape on the OpenAI routes."""

    def __init__(self, app, keys: Iterable[str]) -> None:
        self.app = app
        self._keys = ApiKeys(keys)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self._keys or _exempt(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        error = self._keys.check_headers(headers)
        if error is None:
            await self.app(scope, receive, send)
            return
        scope["capmesh.route"] = "unauthenticated"
        body = json.dumps(_error_body(scope["path"], error)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="capmesh"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _exempt(path: str) -> bool:
    return path in EXEMPT_HTTP_PATHS or path.startswith(EXEMPT_HTTP_PREFIXES)


def _error_body(path: str, error: Unauthenticated) -> dict:
    if path in OPENAI_PATHS:
        code = "invalid_api_key" if error.reason == "API_KEY_INVALID" else "missing_api_key"
        return {"error": {"message": error.message, "type": "authentication_error", "param": None, "code": code}}
    return {
        "code": 16,
        "status": "UNAUTHENTICATED",
        "message": error.message,
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.reason, "domain": "capmesh.dev"}
        ],
    }

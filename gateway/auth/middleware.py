"""The guard on the gateway's HTTP port (ASGI middleware).

Keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the mesh secret as
`X-Capmesh-Mesh-Secret`. `/healthz`, `/readyz`, `/metrics` and the static pages (console, docs,
OpenAPI document) stay open: the pages hold no data, and their API calls send the key the user
enters. A missing or wrong credential is 401 (with `WWW-Authenticate`), a key over its quota 429
with `Retry-After`; on the OpenAI routes in OpenAI's error shape. Roles are checked per gRPC
method where the bridge calls it (`GatewayCalls`), from the same table as the gRPC port.
"""

from __future__ import annotations

import json
from typing import Any

from capmesh.gateway.server.auth.guard import CALLER, Caller, Guard
from capmesh.gateway.server.http.errors import HttpError
from capmesh.services.runtime.errors import CapmeshError, Unauthenticated
from capmesh.services.runtime.status import to_status_proto

EXEMPT_HTTP_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json", "/favicon.ico"})
EXEMPT_HTTP_PREFIXES = ("/static/",)
OPENAI_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/audio/speech",
        "/v1/images/generations",
        "/v1/models",
    }
)


class AuthMiddleware:
    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self._guard = guard

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        found = self._guard.authenticate(headers)
        if isinstance(found, Unauthenticated):
            scope["capmesh.route"] = "unauthenticated"
            await _send_json(
                send,
                401,
                _unauthenticated_body(scope["path"], found),
                [(b"www-authenticate", b'Bearer realm="capmesh"')],
            )
            return
        try:
            admission = await self._guard.quotas.admit(found)
        except CapmeshError as error:
            scope["capmesh.route"] = "over_quota"
            refusal = HttpError(to_status_proto(error))
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.response_headers().items()]
            await _send_json(send, refusal.http_status, _error_body(scope["path"], refusal), extra)
            return
        CALLER.set(Caller(found, self._guard))  # this request's task: the handler runs within it
        try:
            await self.app(scope, receive, send)
        finally:
            await admission.release()


async def _send_json(send: Any, status: int, body: dict, extra: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _exempt(path: str) -> bool:
    return path in EXEMPT_HTTP_PATHS or path.startswith(EXEMPT_HTTP_PREFIXES)


def _error_body(path: str, error: HttpError) -> dict:
    if path in OPENAI_PATHS:
        from capmesh.gateway.server.http.openai_compat import openai_error_body

        return openai_error_body(error)
    return error.body()


def _unauthenticated_body(path: str, error: Unauthenticated) -> dict:
    if path in OPENAI_PATHS:
        code = "invalid_api_key" if error.reason.endswith("_INVALID") else "missing_api_key"
        return {"error": {"message": error.message, "type": "authentication_error", "param": None, "code": code}}
    return HttpError(to_status_proto(error)).body()

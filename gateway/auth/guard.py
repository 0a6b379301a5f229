"""The gateway's guard on its gRPC port, and what every call learns about its caller.

`Guard` holds the keys and the quotas. For each call the gRPC interceptor (and, on the HTTP port,
the middleware) authenticates the caller, checks the method against the role table (`policy`),
admits the call under the key's quota, and sets `CALLER` for the call's task: the proxy and the
HTTP bridge read it to pass the key id (never the key) to backends and to count LLM tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from capmesh.gateway.server.auth.keys import Keys, Principal
from capmesh.gateway.server.auth.policy import check_role, is_open
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.quotas import Quotas, TokenMeter, build_quotas
from capmesh.services.runtime.errors import CapmeshError, Unauthenticated
from capmesh.services.runtime.interceptor import HandlerInterceptor, rebuild_handler
from capmesh.services.runtime.status import abort_with_error
from capmesh.services.runtime.trust import KEY_ID_HEADER, MESH_SECRET_HEADER, refusing_handler

# What a caller presents to the gateway: never forwarded to a backend.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "cookie", MESH_SECRET_HEADER, KEY_ID_HEADER})


class Guard:
    def __init__(self, settings: GatewaySettings, redis: Any) -> None:
        self._settings = settings
        self.keys = Keys(settings)
        self.quotas: Quotas = build_quotas(redis)

    @property
    def enforcing(self) -> bool:
        """Whether any call needs a credential: keys or a mesh secret are configured."""
        return self.keys.keys_required or bool(self._settings.mesh_secret)

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    def authenticate(self, headers: Mapping[str, str | bytes]) -> Principal | Unauthenticated:
        return self.keys.authenticate(headers)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    guard: Guard


CALLER: ContextVar[Caller | None] = ContextVar("capmesh_caller", default=None)


def key_id_metadata() -> tuple[tuple[str, str], ...]:
    """`x-capmesh-key-id` for the current call's caller, when it has a key id."""
    caller = CALLER.get()
    return ((KEY_ID_HEADER, caller.principal.key_id),) if caller is not None and caller.principal.key_id else ()


def without_credentials(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """The metadata less every credential (the key id is set by the gateway, not the caller)."""
    return tuple((key, value) for key, value in metadata or () if key not in CREDENTIAL_HEADERS)


def role_error(method: str) -> CapmeshError | None:
    """PERMISSION_DENIED when the current caller's role may not call `method` (HTTP bridge)."""
    caller = CALLER.get()
    return None if caller is None else check_role(caller.principal, method)


def token_meter(method: str) -> TokenMeter | None:
    """A meter for the current caller's LLM call when its key has a token quota."""
    caller = CALLER.get()
    return None if caller is None else caller.guard.quotas.meter(caller.principal, method)


class AuthInterceptor(HandlerInterceptor):
    """Authenticates, authorizes and admits every gRPC call but health checks."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if is_open(method):
            return handler
        found = self._guard.authenticate(dict(details.invocation_metadata or ()))
        if isinstance(found, CapmeshError):
            return refusing_handler(handler, found)
        denied = check_role(found, method)
        if denied is not None:
            return refusing_handler(handler, denied)
        caller = Caller(found, self._guard)
        return rebuild_handler(
            handler, lambda inner: _admitted(inner, caller), lambda inner: _admitted_stream(inner, caller)
        )


def _admitted(inner: Callable[..., Any], caller: Caller) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        CALLER.set(caller)  # this call's own task: no reset needed
        try:
            admission = await caller.guard.quotas.admit(caller.principal)
        except CapmeshError as error:
            await abort_with_error(context, error)
        try:
            return await inner(request, context)
        finally:
            await admission.release()

    return handle


def _admitted_stream(inner: Callable[..., Any], caller: Caller) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(inner):  # a coroutine that writes with context.write (the proxy)
        return _admitted(inner, caller)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        CALLER.set(caller)
        try:
            admission = await caller.guard.quotas.admit(caller.principal)
        except CapmeshError as error:
            await abort_with_error(context, error)
        try:
            async for message in inner(request, context):
                yield message
        finally:
            await admission.release()

    return handle

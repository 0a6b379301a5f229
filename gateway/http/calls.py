"""How the HTTP side calls gRPC methods: in-process, on the gateway's own objects.

A method of the gateway's own services (registry, files, jobs, operations, health) runs the handler
the gRPC server runs (`OwnServices`); any other method is a capability call through the router
(`BackendCall`: the same choice, retries and metrics as the gRPC proxy and the job runner).
Requests and responses stay serialized bytes, so one path serves every service without generated
stubs. Failures are `grpc.aio.AioRpcError`s, as a gRPC client would see them, so the HTTP side
maps them to HTTP statuses one way. API keys are checked by the HTTP middleware before any call;
each method's role rule here, from the table the gRPC port uses (`auth.policy`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence

import grpc

from capmesh.gateway.server.auth.guard import key_id_metadata, role_error, token_meter
from capmesh.gateway.server.own_services import OwnServices, rpc_error, rpc_error_of
from capmesh.gateway.server.routing.call import BackendCall
from capmesh.gateway.server.routing.router import Router
from capmesh.services.runtime.errors import CapmeshError

Metadata = Sequence[tuple[str, str]]

# Headers an HTTP caller sends that travel on as gRPC metadata; credentials never do (the HTTP
# middleware checked them), the caller's key id does.
FORWARDED_HEADERS = ("x-request-id",)


def forwarded_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return (*((name, headers[name]) for name in FORWARDED_HEADERS if headers.get(name)), *key_id_metadata())


class GatewayCalls:
    def __init__(self, router: Router, own: OwnServices) -> None:
        self._router = router
        self._own = own

    def _own_handler(self, method: str) -> grpc.RpcMethodHandler | None:
        denied = role_error(method)
        if denied is not None:
            raise rpc_error_of(denied)
        return self._own.handler(method)

    def _backend_call(
        self, method: str, request: bytes | AsyncIterator[bytes], metadata: Metadata, timeout: float | None
    ) -> BackendCall:
        info = self._router.method_info(method)
        if info is None:  # what the gRPC server answers for a method nobody serves
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        deadline = None if timeout is None else time.monotonic() + timeout
        return BackendCall(self._router, info, request, metadata=metadata, deadline=deadline)

    async def unary(
        self, method: str, request: bytes, *, metadata: Metadata = (), timeout: float | None = None
    ) -> bytes:
        handler = self._own_handler(method)
        if handler is not None:
            return await self._own.unary(handler, request, metadata=metadata, timeout=timeout)
        response = b""
        async for message in _failing_as_rpc(self._backend_call(method, request, metadata, timeout)):
            response = message
        return response

    async def stream(self, method: str, request: bytes, *, metadata: Metadata = ()) -> AsyncGenerator[bytes, None]:
        """The serialized responses of a server-streaming call; closing the iterator (or cancelling
        the task reading it) cancels the call."""
        handler = self._own_handler(method)
        if handler is not None:
            messages = self._own.stream(handler, request, metadata=metadata)
        else:
            messages = _failing_as_rpc(self._backend_call(method, request, metadata, None))
        try:
            async for message in messages:
                yield message
        finally:
            await messages.aclose()

    async def client_stream(self, method: str, requests: AsyncIterator[bytes], *, metadata: Metadata = ()) -> bytes:
        handler = self._own_handler(method)
        if handler is not None:
            return await self._own.client_stream(handler, requests, metadata=metadata)
        response = b""
        async for message in _failing_as_rpc(self._backend_call(method, requests, metadata, None)):
            response = message
        return response


async def _failing_as_rpc(call: BackendCall) -> AsyncGenerator[bytes, None]:
    """The call's responses; the router's own refusals become the errors a gRPC client would get.
    An LLM call of a key with a token quota is refused when none are left, and counted."""
    meter = token_meter(call.info.path)
    async with call:
        try:
            if meter is not None:
                await meter.start()
            async for message in call:
                if meter is not None:
                    meter.see(message)
                yield message
        except CapmeshError as error:
            raise rpc_error_of(error) from None
        finally:
            if meter is not None:
                await meter.settle()

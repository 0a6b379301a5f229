"""The services the gateway serves itself (registry, files, jobs, operations, health), registered
once and reachable two ways: by gRPC clients through the gateway's server, and in-process by the
HTTP bridge, which calls the very handlers the server runs (no connection to its own port).

`OwnServices` stands in for the gRPC server when a generated `add_*Servicer_to_server` function
registers a servicer. Through `wrapped`, each handler gets the request-context wrapping (request
ids, logs, domain errors -> statuses) as it is added, so proxied calls pay for no server
interceptor (the backend's own does that work, and the proxy relays what it says). Through
`plain`, handlers are registered as they are (health: probes need no request context).

In-process calls take and return serialized messages, like the proxy's, and fail with a
`grpc.aio.AioRpcError` carrying the status, details and trailing metadata a gRPC client would see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import Any

import grpc

from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import to_grpc_status

Metadata = Sequence[tuple[str, str | bytes]]


def rpc_error(
    code: grpc.StatusCode, details: str, trailing: Metadata = (), initial: Metadata = ()
) -> grpc.aio.AioRpcError:
    """The error a gRPC client would get for a call that ended with this status."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing), details)


def rpc_error_of(error: CapmeshError) -> grpc.aio.AioRpcError:
    """A domain error as a failed call, with the same google.rpc details a server would send."""
    status = to_grpc_status(error)
    return rpc_error(status.code, status.details, tuple(status.trailing_metadata or ()))


class _HandlerCallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _intercepted(
    interceptor: grpc.aio.ServerInterceptor, method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """The handler as `interceptor` would wrap it, computed once when the service is added.
    The interceptor only wraps (its continuation never suspends), so its coroutine completes on
    the first step."""

    async def continuation(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    step = interceptor.intercept_service(continuation, _HandlerCallDetails(method))
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError(f"{type(interceptor).__name__} suspended while wrapping {method}")


class _InterceptedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, interceptor: grpc.aio.ServerInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._wrapped: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._wrapped:
            handler = self._inner.service(handler_call_details)
            self._wrapped[method] = None if handler is None else _intercepted(self._interceptor, method, handler)
        return self._wrapped[method]


class _Registrar:
    """What `add_*Servicer_to_server` calls: registers on the server and keeps the handlers."""

    def __init__(self, services: OwnServices, interceptor: grpc.aio.ServerInterceptor | None) -> None:
        self._services = services
        self._interceptor = interceptor

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        interceptor = self._interceptor
        if interceptor is not None:
            handlers = {name: _intercepted(interceptor, f"/{service}/{name}", h) for name, h in handlers.items()}
        self._services._server.add_registered_method_handlers(service, handlers)
        self._services._registered.update({f"/{service}/{name}": h for name, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        interceptor = self._interceptor
        added = [h if interceptor is None else _InterceptedGeneric(h, interceptor) for h in handlers]
        self._services._server.add_generic_rpc_handlers(added)
        self._services._generic.extend(added)


class OwnServices:
    def __init__(self, server: grpc.aio.Server, interceptor: grpc.aio.ServerInterceptor) -> None:
        self._server = server
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self.wrapped = _Registrar(self, interceptor)
        self.plain = _Registrar(self, None)

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        """The handler the server runs for `method` ("/package.Service/Method"), if the gateway serves it."""
        handler = self._registered.get(method)
        if handler is None:
            details = _HandlerCallDetails(method)
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        return handler

    # -- in-process calls -----------------------------------------------------------------------
    async def unary(
        self, handler: grpc.RpcMethodHandler, request: bytes, *, metadata: Metadata = (), timeout: float | None = None
    ) -> bytes:
        context = _LocalContext(metadata, timeout)
        try:
            async with asyncio.timeout(timeout):
                response = await handler.unary_unary(handler.request_deserializer(request), context)
        except grpc.aio.AbortError:
            raise context.error() from None
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        return handler.response_serializer(response)

    async def stream(
        self, handler: grpc.RpcMethodHandler, request: bytes, *, metadata: Metadata = ()
    ) -> AsyncGenerator[bytes, None]:
        """The serialized responses of a server-streaming handler (an async generator)."""
        context = _LocalContext(metadata, None)
        serialize = handler.response_serializer
        responses = handler.unary_stream(handler.request_deserializer(request), context)
        try:
            async for response in responses:
                yield serialize(response)
        except grpc.aio.AbortError:
            raise context.error() from None
        finally:
            await responses.aclose()

    async def client_stream(
        self, handler: grpc.RpcMethodHandler, requests: AsyncIterator[bytes], *, metadata: Metadata = ()
    ) -> bytes:
        context = _LocalContext(metadata, None)
        deserialize = handler.request_deserializer

        async def messages() -> AsyncIterator[Any]:
            async for raw in requests:
                yield deserialize(raw)

        try:
            response = await handler.stream_unary(messages(), context)
        except grpc.aio.AbortError:
            raise context.error() from None
        return handler.response_serializer(response)


class _LocalContext:
    """The servicer context of an in-process call: the caller's metadata and deadline in; the
    status a handler aborts with kept for the caller's error. It has what the gateway's own
    handlers use; a handler needing more fails loudly (AttributeError) in the tests."""

    def __init__(self, metadata: Metadata, timeout: float | None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._initial: Metadata = ()
        self._trailing: Metadata = ()
        self._code = grpc.StatusCode.OK
        self._details = ""

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        self._initial = tuple(metadata)

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> None:
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, tuple(status.trailing_metadata or ()))

    def error(self) -> grpc.aio.AioRpcError:
        return rpc_error(self._code, self._details, self._trailing, self._initial)

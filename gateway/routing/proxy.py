"""The transparent proxy: every capability method served by the gateway, relayed as raw bytes.

Handlers use identity codecs, so request and response messages pass through as the bytes the
client and the backend wrote (the router may peek at the request's `model` field, nothing more).
The client's metadata goes to the backend, less its credentials (the key becomes its id,
`x-capmesh-key-id`; `BackendCall` adds the mesh secret); the backend's initial
metadata, messages, status code, details and trailing metadata (google.rpc.Status details
included) come back unchanged. Initial metadata is sent as an operation of its own only when the
backend sent some (backends echo the request id in the trailers, which cost nothing extra);
otherwise gRPC sends the empty headers with the first message. A stream's backend side is read
ahead (`ReadAhead`: one task per stream) so that the next read overlaps the last write.
The client's remaining time becomes the backend call's deadline, and a client that cancels (or
whose deadline passes) cancels the backend call: the handler task is cancelled, and leaving the
call closes the read-ahead and the backend call. Choosing, retrying and metrics are
`BackendCall`'s, shared with the job runner and the HTTP bridge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable
from typing import Any

import grpc

from capmesh.gateway.server.auth.guard import key_id_metadata, token_meter, without_credentials
from capmesh.gateway.server.routing.call import BackendCall
from capmesh.gateway.server.routing.readahead import ReadAhead
from capmesh.gateway.server.routing.router import Router
from capmesh.gateway.server.routing.services import MethodInfo, ServiceInfo
from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import abort_with_error

# Metadata the gRPC library sets per hop; everything else is relayed.
_HOP_BY_HOP = frozenset({"user-agent"})


def _forwarded(context: grpc.aio.ServicerContext) -> tuple:
    """The caller's metadata less hop-by-hop entries and credentials, plus the caller's key id."""
    relayed = without_credentials(context.invocation_metadata())
    return (*(m for m in relayed if m[0] not in _HOP_BY_HOP), *key_id_metadata())


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def _send_initial(context: grpc.aio.ServicerContext, call: Any) -> None:
    initial = await call.initial_metadata()
    if initial:
        await context.send_initial_metadata(tuple(initial))


async def _relay_error(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError, headers_sent: bool) -> None:
    """Ends the call with the backend's status, details and trailing metadata (raises)."""
    if not headers_sent:
        initial = exc.initial_metadata()
        if initial:
            await context.send_initial_metadata(tuple(initial))
    await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))


class Proxy:
    def __init__(self, router: Router) -> None:
        self._router = router

    # -- handler construction -------------------------------------------------------------------
    def handler(self, info: MethodInfo) -> grpc.RpcMethodHandler:
        async def relay(request: Any, context: grpc.aio.ServicerContext) -> bytes | None:
            return await self.relay(info, request, context)

        if info.client_streaming and info.server_streaming:
            return grpc.stream_stream_rpc_method_handler(relay)
        if info.client_streaming:
            return grpc.stream_unary_rpc_method_handler(relay)
        if info.server_streaming:
            return grpc.unary_stream_rpc_method_handler(relay)
        return grpc.unary_unary_rpc_method_handler(relay)

    def service_handlers(self, service: ServiceInfo) -> dict[str, grpc.RpcMethodHandler]:
        return {m.path.rpartition("/")[2]: self.handler(m) for m in service.methods}

    def dynamic_handler(self) -> grpc.GenericRpcHandler:
        """Serves methods of services that only registered backends name (not in the contracts)."""
        proxy, router = self, self._router

        class _Dynamic(grpc.GenericRpcHandler):
            def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                info = router.method_info(handler_call_details.method)
                if info is None or info.path in router.methods:
                    return None
                return proxy.handler(info)

        return _Dynamic()

    # -- one call, any shape --------------------------------------------------------------------
    async def relay(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext) -> bytes | None:
        """Relays one call: streamed responses are written as they come, a single response is
        returned (the call shape decides)."""
        response = None
        headers_sent = False
        meter = token_meter(info.path)  # an LLM call of a key with a token quota
        if meter is not None:
            try:
                await meter.start()
            except CapmeshError as error:
                await abort_with_error(context, error)
        async with BackendCall(
            self._router, info, request, metadata=_forwarded(context), deadline=_deadline(context)
        ) as call:
            # A stream's next backend read runs while its last message is written to the caller.
            messages: AsyncIterable[bytes] = ReadAhead(call) if info.server_streaming else call
            try:
                async for message in messages:
                    if meter is not None:
                        meter.see(message)
                    if not headers_sent:
                        headers_sent = True
                        await _send_initial(context, call.call)
                    if info.server_streaming:
                        await context.write(message)
                    else:
                        response = message
            except grpc.aio.AioRpcError as exc:
                await _relay_error(context, exc, headers_sent)
            except CapmeshError as error:
                await abort_with_error(context, error)
            finally:
                if isinstance(messages, ReadAhead):
                    await messages.aclose()
                if meter is not None:
                    await meter.settle()
        if not headers_sent:
            await _send_initial(context, call.call)
        trailing = await call.call.trailing_metadata()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        return response

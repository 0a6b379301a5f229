"""The one server interceptor: request ids, structured logs, and domain errors -> statuses.

For unary and streaming handlers alike it
- takes `x-request-id` from the call's metadata (or makes one), binds it to every log line of the
  call and echoes it back in the trailing metadata: trailers travel with the status anyway, while
  initial metadata of our own would cost every call an operation of its own (and the gateway's
  proxy one more to relay it). A handler that aborts by itself sends only the trailers it chose;
- turns a `CapmeshError` into its canonical status with ErrorInfo / BadRequest / RetryInfo;
- logs any other exception with its traceback and answers INTERNAL, leaving the server serving.
Our streaming handlers are async generators; coroutines using context.write work too.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from capmesh.services.runtime.errors import CapmeshError, Internal
from capmesh.services.runtime.status import to_grpc_status

log = structlog.get_logger("capmesh.rpc")

REQUEST_ID_KEY = "x-request-id"


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and value:
            return str(value)
    return uuid.uuid4().hex


class _Call:
    """What the interceptor does around one call, whatever the handler's shape: `async with _Call(...)`
    binds the request id to the logs and echoes it, and turns what the handler raises into a status."""

    __slots__ = ("context", "echo", "method", "request_id", "started")

    def __init__(self, method: str, context: grpc.aio.ServicerContext, echo: bool) -> None:
        self.method = method
        self.context = context
        self.echo = echo
        self.request_id = request_id_of(context)
        self.started = time.monotonic()

    async def __aenter__(self) -> None:
        structlog.contextvars.bind_contextvars(request_id=self.request_id, rpc=self.method)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        try:
            if exc is None:
                if self.echo:  # after the handler, so that trailers it set are kept
                    self.context.set_trailing_metadata(self._with_request_id(self.context.trailing_metadata()))
                return False
            # An abort the handler chose, and cancellation (BaseException), pass through unchanged.
            if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
                return False
            await self._fail(exc)  # aborts the call, which raises
            return True
        finally:
            log.debug("rpc.done", ms=self._elapsed_ms())
            structlog.contextvars.unbind_contextvars("request_id", "rpc")

    def _with_request_id(self, trailing: Any) -> tuple:
        return (*(trailing or ()), (REQUEST_ID_KEY, self.request_id))

    async def _fail(self, exc: Exception) -> None:
        if isinstance(exc, CapmeshError):
            log.info("rpc.failed", code=exc.code, reason=exc.reason, error=exc.message, ms=self._elapsed_ms())
            error = exc
        else:
            log.error("rpc.crashed", exc_info=exc)
            error = Internal(
                f"internal error while handling {self.method}; request id {self.request_id}", reason="INTERNAL"
            )
        status = to_grpc_status(error)
        trailing = tuple(status.trailing_metadata or ())
        await self.context.abort(
            status.code, status.details, self._with_request_id(trailing) if self.echo else trailing
        )

    def _elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)


def _wrap_coroutine(inner, method: str, echo: bool):
    """Wraps a unary-response handler (its first argument is a request or a request iterator)."""

    async def handle(request, context):
        async with _Call(method, context, echo):
            return await inner(request, context)

    return handle


def _wrap_stream(inner, method: str, echo: bool):
    """Wraps a streaming-response handler: an async generator, or a coroutine that writes with
    context.write (grpc's own health service does)."""
    if not inspect.isasyncgenfunction(inner):
        return _wrap_coroutine(inner, method, echo)

    async def handle(request, context) -> AsyncIterator:
        async with _Call(method, context, echo):
            async for message in inner(request, context):
                yield message

    return handle


Behaviour = Callable[..., Any]


def rebuild_handler(
    handler: grpc.RpcMethodHandler,
    unary_response: Callable[[Behaviour], Behaviour],
    stream_response: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler:
    """A handler of the same kind and codecs as `handler` whose behaviour is the original one passed
    through `unary_response` (unary-unary, stream-unary) or `stream_response` (the streaming kinds)."""
    codecs = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), *codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), *codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), *codecs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), *codecs)


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that replaces each method's handler: subclasses say how in `wrap`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        return None if handler is None else self.wrap(handler, details)

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class RequestContextInterceptor(HandlerInterceptor):
    def __init__(self, *, echo_request_id: bool = True) -> None:
        self._echo = echo_request_id

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method, echo = details.method, self._echo
        return rebuild_handler(
            handler,
            lambda inner: _wrap_coroutine(inner, method, echo),
            lambda inner: _wrap_stream(inner, method, echo),
        )

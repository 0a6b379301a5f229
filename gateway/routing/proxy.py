"""The transparent proxy: every capability method served by the gateway, relayed as raw bytes.

Handlers use identity codecs, so request and response messages pass through as the bytes the
client and the backend wrote (the router may peek at the request's `model` field, nothing more).
The client's metadata goes to the backend; the backend's initial metadata, messages, status code,
details and trailing metadata (google.rpc.Status details included) come back unchanged. The
client's remaining time becomes the backend call's timeout, and a client that cancels (or whose
deadline passes) cancels the backend call, because the handler task is cancelled while it awaits
the backend.
"""

from __future__ import annotations

import time

import grpc

from capmesh.gateway.server import metrics
from capmesh.gateway.server.routing.router import Router, retryable_before_output
from capmesh.gateway.server.routing.services import MethodInfo, ServiceInfo
from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import abort_with_error

# Metadata the gRPC library sets per hop; everything else is relayed.
_HOP_BY_HOP = frozenset({"user-agent"})

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _forwarded(context: grpc.aio.ServicerContext) -> tuple:
    return tuple(m for m in context.invocation_metadata() or () if m[0] not in _HOP_BY_HOP)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _time_left(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


class _Recorder:
    """Metrics of one method, with the label children looked up once."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._latency = metrics.rpc_latency.labels(path)
        self._codes: dict[grpc.StatusCode, object] = {}
        self._request_bytes = metrics.proxied_bytes.labels("request")
        self._response_bytes = metrics.proxied_bytes.labels("response")

    def done(self, started: float, code: grpc.StatusCode, request_bytes: int, response_bytes: int) -> None:
        self._latency.observe(time.perf_counter() - started)
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = metrics.rpc_requests.labels(self._path, code.name)
        counter.inc()
        if request_bytes:
            self._request_bytes.inc(request_bytes)
        if response_bytes:
            self._response_bytes.inc(response_bytes)


async def _relay_error(context, exc: grpc.aio.AioRpcError, headers_sent: bool) -> None:
    """Ends the call with the backend's status, details and trailing metadata (raises)."""
    if not headers_sent:
        initial = exc.initial_metadata()
        if initial:
            await context.send_initial_metadata(tuple(initial))
    await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))


async def _finish_ok(context, call) -> None:
    trailing = await call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))


class Proxy:
    def __init__(self, router: Router) -> None:
        self._router = router
        self._recorders: dict[str, _Recorder] = {}

    def _recorder(self, path: str) -> _Recorder:
        recorder = self._recorders.get(path)
        if recorder is None:
            recorder = self._recorders[path] = _Recorder(path)
        return recorder

    # -- handler construction -------------------------------------------------------------------
    def handler(self, info: MethodInfo) -> grpc.RpcMethodHandler:
        recorder = self._recorder(info.path)
        if info.client_streaming and info.server_streaming:
            return grpc.stream_stream_rpc_method_handler(self._bound(self.stream_stream, info, recorder))
        if info.client_streaming:
            return grpc.stream_unary_rpc_method_handler(self._bound(self.stream_unary, info, recorder))
        if info.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._bound(self.unary_stream, info, recorder))
        return grpc.unary_unary_rpc_method_handler(self._bound(self.unary_unary, info, recorder))

    @staticmethod
    def _bound(method, info: MethodInfo, recorder: _Recorder):
        async def handle(request, context):
            return await method(info, recorder, request, context)
        return handle

    def service_handlers(self, service: ServiceInfo) -> dict[str, grpc.RpcMethodHandler]:
        return {m.path.rpartition("/")[2]: self.handler(m) for m in service.methods}

    def dynamic_handler(self) -> grpc.GenericRpcHandler:
        """Serves methods of services that only registered backends name (not in the contracts)."""
        proxy, router = self, self._router

        class _Dynamic(grpc.GenericRpcHandler):
            def service(self, handler_call_details):
                info = router.method_info(handler_call_details.method)
                if info is None or info.path in router.methods:
                    return None
                return proxy.handler(info)

        return _Dynamic()

    async def _route_failed(self, context, error: CapmeshError, last: grpc.aio.AioRpcError | None):
        if last is not None:  # the backends tried all failed: the caller sees the last real failure
            await _relay_error(context, last, False)
        await abort_with_error(context, error)

    # -- the four call shapes -------------------------------------------------------------------
    async def unary_unary(self, info: MethodInfo, recorder: _Recorder, request: bytes, context):
        started = time.perf_counter()
        metadata = _forwarded(context)
        deadline = _deadline(context)
        code, response_bytes = _CANCELLED, 0
        exclude: set[str] = set()
        last: grpc.aio.AioRpcError | None = None
        try:
            while True:
                try:
                    lease = await self._router.acquire(info, request, deadline=deadline, exclude=exclude)
                except CapmeshError as error:
                    code = last.code() if last is not None else grpc.StatusCode[error.code]
                    await self._route_failed(context, error, last)
                call = lease.entry.unary(info.path)(request, metadata=metadata, timeout=_remaining(deadline))
                try:
                    response = await call
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    lease.release(code, exc.details() or "")
                    if retryable_before_output(exc) and _time_left(deadline):
                        exclude.add(lease.entry.backend_id)
                        last = exc
                        continue
                    await _relay_error(context, exc, False)
                except BaseException:
                    lease.release(_CANCELLED)
                    raise
                code = _OK
                lease.release(_OK)
                initial = await call.initial_metadata()
                if initial:
                    await context.send_initial_metadata(tuple(initial))
                await _finish_ok(context, call)
                response_bytes = len(response)
                return response
        finally:
            recorder.done(started, code, len(request), response_bytes)

    async def unary_stream(self, info: MethodInfo, recorder: _Recorder, request: bytes, context):
        started = time.perf_counter()
        metadata = _forwarded(context)
        deadline = _deadline(context)
        code, response_bytes = _CANCELLED, 0
        exclude: set[str] = set()
        last: grpc.aio.AioRpcError | None = None
        try:
            while True:
                try:
                    lease = await self._router.acquire(info, request, deadline=deadline, exclude=exclude)
                except CapmeshError as error:
                    code = last.code() if last is not None else grpc.StatusCode[error.code]
                    await self._route_failed(context, error, last)
                call = lease.entry.unary_stream(info.path)(request, metadata=metadata, timeout=_remaining(deadline))
                relayed = False
                try:
                    write = context.write
                    while (message := await call.read()) is not grpc.aio.EOF:
                        if not relayed:
                            relayed = True
                            await context.send_initial_metadata(tuple(await call.initial_metadata()))
                        response_bytes += len(message)
                        await write(message)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    lease.release(code, exc.details() or "")
                    if not relayed and retryable_before_output(exc) and _time_left(deadline):
                        exclude.add(lease.entry.backend_id)
                        last = exc
                        continue
                    await _relay_error(context, exc, relayed)
                except BaseException:
                    call.cancel()
                    lease.release(_CANCELLED)
                    raise
                code = _OK
                lease.release(_OK)
                if not relayed:
                    await context.send_initial_metadata(tuple(await call.initial_metadata()))
                await _finish_ok(context, call)
                return
        finally:
            recorder.done(started, code, len(request), response_bytes)

    async def stream_unary(self, info: MethodInfo, recorder: _Recorder, requests, context):
        # Client streams are not retried: the request messages are consumed as they are relayed.
        started = time.perf_counter()
        counter = _Counted(requests)
        code, response_bytes = _CANCELLED, 0
        try:
            deadline = _deadline(context)
            try:
                lease = await self._router.acquire(info, None, deadline=deadline)
            except CapmeshError as error:
                code = grpc.StatusCode[error.code]
                await abort_with_error(context, error)
            call = lease.entry.stream_unary(info.path)(counter, metadata=_forwarded(context),
                                                       timeout=_remaining(deadline))
            try:
                response = await call
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                lease.release(code, exc.details() or "")
                await _relay_error(context, exc, False)
            except BaseException:
                lease.release(_CANCELLED)
                raise
            code = _OK
            lease.release(_OK)
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
            await _finish_ok(context, call)
            response_bytes = len(response)
            return response
        finally:
            recorder.done(started, code, counter.size, response_bytes)

    async def stream_stream(self, info: MethodInfo, recorder: _Recorder, requests, context):
        started = time.perf_counter()
        counter = _Counted(requests)
        code, response_bytes = _CANCELLED, 0
        try:
            deadline = _deadline(context)
            try:
                lease = await self._router.acquire(info, None, deadline=deadline)
            except CapmeshError as error:
                code = grpc.StatusCode[error.code]
                await abort_with_error(context, error)
            call = lease.entry.stream_stream(info.path)(counter, metadata=_forwarded(context),
                                                        timeout=_remaining(deadline))
            relayed = False
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    if not relayed:
                        relayed = True
                        await context.send_initial_metadata(tuple(await call.initial_metadata()))
                    response_bytes += len(message)
                    await context.write(message)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                lease.release(code, exc.details() or "")
                await _relay_error(context, exc, relayed)
            except BaseException:
                call.cancel()
                lease.release(_CANCELLED)
                raise
            code = _OK
            lease.release(_OK)
            if not relayed:
                await context.send_initial_metadata(tuple(await call.initial_metadata()))
            await _finish_ok(context, call)
        finally:
            recorder.done(started, code, counter.size, response_bytes)


class _Counted:
    """Relays the client's request messages, counting their bytes."""

    def __init__(self, requests) -> None:
        self._requests = requests
        self.size = 0

    def __aiter__(self):
        return self._relay()

    async def _relay(self):
        async for message in self._requests:
            self.size += len(message)
            yield message

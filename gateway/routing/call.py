"""One call to a capability backend, in any of the four call shapes, with the router's retry rule.

Every caller that reaches a backend goes through `BackendCall`: the transparent proxy (gRPC
clients), the job runner and the HTTP bridge (both in-process). The routine, written once:

1. reserve a slot on the best backend (`Router.acquire`, which may wait in the route queue);
2. call it, yielding the raw response messages as they arrive;
3. on a failure that `retryable_before_output` allows, before the first response message, leave
   that backend out and go back to 1 while time is left; once a message has been passed on, or for
   client-streaming calls (their request messages are consumed as they are relayed), never.
   UNAVAILABLE is retried as long as backends and time are left (the backend never ran the call
   or cannot serve). So is RESOURCE_EXHAUSTED: it is how a backend's own admission says that its
   slots and its line are full, which is what keeps its `max_concurrency` true across gateways.
   Each gateway counts only its own calls, so two gateways may both see room on one backend; the
   backend, the one place that sees every call, refuses the extra one before running anything, and
   the gateway that sent it tries another backend. That costs nothing on a call that finds room
   (no shared counter, no Redis round trip) and one refused round trip on a call that does not.
   INTERNAL and UNKNOWN are retried once: a broken backend (a bad GPU, a corrupt
   checkpoint) should not reach the caller while a healthy one exists, but a request that crashes
   every backend should not crash them all. This is safe because every method whose request is
   whole bytes is a contract method that only computes from its request (no state to change
   twice); the backend's failure still counts against it, so a broken one soon rests in ERROR;
4. when no backend is left after such a failure, raise that real backend failure rather than the
   routing error, so the caller learns why the backends failed.

Failures come out as `grpc.aio.AioRpcError` (what the backend said: status, details, metadata) or
`CapmeshError` (the router's own refusal: no backend, all busy, deadline). Closing the iterator,
or cancelling the task that reads it, cancels the backend call and frees the slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from capmesh.gateway.server import metrics
from capmesh.gateway.server.routing.services import MethodInfo
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.errors import CapmeshError

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from capmesh.gateway.server.routing.router import Router

Metadata = Sequence[tuple[str, str | bytes]]
Request = bytes | AsyncIterator[bytes]

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED


# The backend did not run the call (down, or full up to its own line): another one may.
_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Backend faults that another backend may not have, but that the request itself may have caused:
# retried once per call (see the module's docstring).
_RETRIED_ONCE = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def retryable_before_output(exc: grpc.aio.AioRpcError, faults_retried: int) -> bool:
    """A failure another backend may not have: retried only if nothing was passed on yet.
    `faults_retried` counts the INTERNAL / UNKNOWN failures of this call already retried."""
    code = exc.code()
    return code in _RETRIED or (code in _RETRIED_ONCE and faults_retried == 0)


def remaining_s(deadline: float | None) -> float | None:
    """Seconds left until a `time.monotonic()` deadline (never negative); None without one."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Recorder:
    """Metrics of one method, with the label children looked up once."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._latency = metrics.rpc_latency.labels(path)
        self._codes: dict[grpc.StatusCode, Any] = {}
        self._request_bytes = metrics.proxied_bytes.labels("request")
        self._response_bytes = metrics.proxied_bytes.labels("response")
        self.queue_wait = metrics.route_queue_wait.labels(path.lstrip("/").rpartition("/")[0])

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


_recorders: dict[str, _Recorder] = {}


def _recorder(path: str) -> _Recorder:
    recorder = _recorders.get(path)
    if recorder is None:
        recorder = _recorders[path] = _Recorder(path)
    return recorder


class _Counted:
    """Relays the caller's request messages, counting their bytes."""

    def __init__(self, requests: AsyncIterator[bytes]) -> None:
        self._requests = requests
        self.size = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        async for message in self._requests:
            self.size += len(message)
            yield message


class BackendCall:
    """The raw response messages of one call through the router (see the module's docstring).

    Use it as `async with call: async for message in call: ...` so that leaving the loop early
    closes it at once. `call` is the backend call answering now (its initial and trailing metadata
    are the caller's to relay); `backend_id` is the backend it runs on."""

    def __init__(
        self,
        router: Router,
        info: MethodInfo,
        request: Request,
        *,
        metadata: Metadata = (),
        deadline: float | None = None,
        on_backend: Callable[[str], None] | None = None,
    ) -> None:
        self._router = router
        self.info = info
        self._request = request if isinstance(request, bytes) else _Counted(request)
        # The caller's metadata and the mesh secret that every backend call presents.
        self._metadata = (*metadata, *router.registry.credentials)
        self._deadline = deadline
        self._on_backend = on_backend
        self._trace_parent = telemetry.current_context()  # the caller's span; None while tracing is off
        self.call: Any = None  # grpc.aio.Call of the backend answering now
        self.backend_id = ""
        self._responses = self._run()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._responses

    async def __aenter__(self) -> BackendCall:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._responses.aclose()

    def _start(self, entry: Any, request: Any, metadata: Metadata) -> Any:
        info, timeout = self.info, remaining_s(self._deadline)
        if info.client_streaming:
            start = entry.stream_stream(info.path) if info.server_streaming else entry.stream_unary(info.path)
        else:
            start = entry.unary_stream(info.path) if info.server_streaming else entry.unary(info.path)
        return start(request, metadata=metadata, timeout=timeout)

    def _time_left(self) -> bool:
        return self._deadline is None or time.monotonic() < self._deadline

    def _attempt_span(self, attempt: int, queue_wait_s: float) -> Span | None:
        """The span of one attempt on the chosen backend, under the caller's span (tracing on)."""
        if self._trace_parent is None:
            return None
        return telemetry.start_client_span(
            f"route {self.info.path}",
            self._trace_parent,
            {
                "rpc.system": "grpc",
                "rpc.service": self.info.service,
                "rpc.method": self.info.path.rpartition("/")[2],
                "capmesh.backend": self.backend_id,
                "capmesh.attempt": attempt,
                "capmesh.queue_wait_s": round(queue_wait_s, 6),
            },
        )

    async def _run(self) -> AsyncGenerator[bytes, None]:
        info, request = self.info, self._request
        # Only a request that is whole bytes can be sent again; the router may also read its model.
        retry = isinstance(request, bytes)
        started = time.perf_counter()
        code, response_bytes = _CANCELLED, 0
        exclude: set[str] = set()
        faults_retried = 0
        last: grpc.aio.AioRpcError | None = None
        attempt = 0
        try:
            while True:
                waiting = time.perf_counter()
                try:
                    slot = await self._router.acquire(
                        info, request if isinstance(request, bytes) else None, deadline=self._deadline, exclude=exclude
                    )
                except CapmeshError as error:
                    if last is not None:  # the backends tried all failed: the caller sees the last real failure
                        code = last.code()
                        raise last from None
                    code = grpc.StatusCode[error.code]
                    raise
                self.backend_id = slot.entry.backend_id
                if self._on_backend is not None:
                    self._on_backend(self.backend_id)
                attempt += 1
                queue_wait = time.perf_counter() - waiting
                _recorder(info.path).queue_wait.observe(queue_wait)
                span = self._attempt_span(attempt, queue_wait)
                metadata = self._metadata if span is None else telemetry.trace_metadata(self._metadata, span)
                call = self.call = self._start(slot.entry, request, metadata)
                outcome, details, relayed = _CANCELLED, "", False
                try:
                    if info.server_streaming:
                        while (message := await call.read()) is not grpc.aio.EOF:
                            relayed = True
                            response_bytes += len(message)
                            yield message
                        outcome = _OK
                    else:
                        message = await call
                        outcome = code = _OK
                        slot.release(_OK)  # the slot is free before the caller handles the response
                        relayed = True
                        response_bytes += len(message)
                        yield message
                    code = _OK
                    return
                except grpc.aio.AioRpcError as exc:
                    outcome, details = exc.code(), exc.details() or ""
                    code = outcome
                    if (
                        relayed
                        or not retry
                        or not retryable_before_output(exc, faults_retried)
                        or not self._time_left()
                    ):
                        raise
                    if outcome in _RETRIED_ONCE:
                        faults_retried += 1
                    metrics.route_retries.labels(info.service, outcome.name).inc()
                    if span is not None:
                        span.set_attribute("capmesh.retry_reason", outcome.name)
                    exclude.add(self.backend_id)
                    last = exc
                finally:
                    if outcome is _CANCELLED:
                        call.cancel()
                    slot.release(outcome, details)
                    if span is not None:
                        telemetry.end_span(span, outcome)
        finally:
            request_bytes = len(request) if isinstance(request, bytes) else request.size
            _recorder(info.path).done(started, code, request_bytes, response_bytes)

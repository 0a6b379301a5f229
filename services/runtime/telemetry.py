"""Tracing with OpenTelemetry: on when the standard `OTEL_*` variables ask for it, absent otherwise.

`setup_tracing(service_name)` runs once at process start (capability servers and the gateway). It
does nothing unless `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER` is set (and `OTEL_SDK_DISABLED` is not true): then no tracer provider
exists, no interceptor or middleware is installed, and every hook below is one `enabled()` check,
so tracing off costs nothing measurable. When on, the SDK reads the rest of its standard variables
itself (`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES`);
`service.name` is `OTEL_SERVICE_NAME`, or else the process's own name (gateway, tts, llm, ...).

Why hand-written interceptors rather than the grpc instrumentation package: the gateway's proxy
relays raw bytes through generic handlers and needs spans per routing attempt (backend, attempt,
retry reason, queue wait), and the services need a span per engine stage, read from the progress
messages they stream. Both are a few lines over the W3C `traceparent` propagator:
- `TracingInterceptor`: a SERVER span per gRPC call from the caller's `traceparent` metadata,
  current while the handler runs (so logs carry its ids and calls made inside become children),
  with one child span per progress stage a streaming handler reports (`queued`, `loading`,
  `denoising`, ...), for every capability at once;
- `TracingMiddleware`: the same for the HTTP bridge, from the `traceparent` header;
- `trace_metadata(metadata, span)`: the metadata of an outgoing call, carrying `span` as parent
  (the gateway's routing attempts, services calling through the gateway);
- `traceparent_of` / `context_of_traceparent`: a span context as text, kept in a job's record so
  that its attempts, even on another gateway after a restart, join the submitter's trace.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from capmesh.services.runtime.interceptor import HandlerInterceptor, rebuild_handler

_ENABLING = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
# Trace headers of an incoming call; an outgoing call carries the current span's instead.
_TRACE_KEYS = frozenset({"traceparent", "tracestate"})

_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider once tracing is on
_tracer: Tracer | None = None


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENABLING)


def setup_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Starts the tracer provider and its exporter when the variables ask for it; True if on.

    Exporters: `otlp` (the default; OTLP over gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT`) or `console`.
    """
    global _provider, _tracer
    environ = os.environ if environ is None else environ
    if _tracer is not None or not tracing_wanted(environ):
        return _tracer is not None
    # Imported here: a process without tracing never loads the SDK or the exporter.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported here: use otlp, console or none")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("capmesh")
    return True


def shutdown_tracing() -> None:
    """Exports the spans still buffered and stops the provider (at process exit)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer:
    if _tracer is None:
        raise RuntimeError("tracing is off: check enabled() first")
    return _tracer


# -- propagation --------------------------------------------------------------------------------
def context_of_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The caller's trace context from gRPC metadata (or HTTP headers as pairs)."""
    carrier = {k.lower(): v for k, v in metadata or () if isinstance(v, str) and k.lower() in _TRACE_KEYS}
    return propagate.extract(carrier)


def trace_metadata(
    metadata: Sequence[tuple[str, str | bytes]], span: Span | None = None
) -> tuple[tuple[str, str | bytes], ...]:
    """`metadata` for an outgoing call whose parent is `span` (default: the current span): any
    trace headers it came with (the caller's, one hop up) are replaced."""
    return (*(m for m in metadata if m[0] not in _TRACE_KEYS), *trace_headers(span))


def trace_headers(span: Span | None = None) -> tuple[tuple[str, str], ...]:
    """The trace headers (traceparent, tracestate) that make `span` (default: the current span)
    the parent of an outgoing call; none when there is no span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    return tuple(carrier.items())


def traceparent_of(span: Span) -> str:
    """The W3C traceparent of `span` ("" for an invalid span), to be stored and read back later."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def context_of_traceparent(traceparent: str) -> otel_context.Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


def current_context() -> otel_context.Context | None:
    """The current trace context when tracing is on (captured where a call starts); else None."""
    return otel_context.get_current() if _tracer is not None else None


def start_client_span(name: str, parent: otel_context.Context | None, attributes: dict[str, Any]) -> Span:
    """A CLIENT span under `parent`, not made current: spans of async generators (the gateway's
    routing attempts) must not change the context of the task that iterates them."""
    return tracer().start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)


def end_span(span: Span, code: grpc.StatusCode) -> None:
    """Ends a call's span with its gRPC status code (an error status unless OK)."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def mark(name: str, attributes: dict[str, Any]) -> str:
    """A span for a moment (a job's submission) under the current span; its traceparent for the
    spans to come under it ("" while tracing is off)."""
    if _tracer is None:
        return ""
    span = _tracer.start_span(name, attributes=attributes)
    span.end()
    return traceparent_of(span)


@contextmanager
def span_under(traceparent: str, name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A span under the stored `traceparent`, current within the block (a job's attempt: the calls
    it makes become its children); nothing while tracing is off or without a traceparent."""
    if _tracer is None or not traceparent:
        yield
        return
    with _tracer.start_as_current_span(name, context=context_of_traceparent(traceparent), attributes=attributes):
        yield


def log_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the current span's trace_id and span_id on every log line."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


# -- gRPC server spans --------------------------------------------------------------------------
def _stage_of(message: Any) -> str:
    """The progress stage a response message reports ("" for other messages); every capability's
    streaming response has a `progress` field of type capmesh.common.v1.Progress."""
    try:
        return message.progress.stage if message.HasField("progress") else ""
    except (AttributeError, ValueError):  # raw bytes (the proxy) or a message without one
        return ""


class _ServerSpan:
    """The span of one call and the span of the stage its progress messages currently report."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        service, _, name = method.lstrip("/").partition("/")
        self.span = tracer().start_span(
            method,
            context=context_of_metadata(context.invocation_metadata()),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self._stage: Span | None = None
        self._stage_name = ""

    def __enter__(self) -> _ServerSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def observe(self, message: Any) -> None:
        stage = _stage_of(message)
        if stage and stage != self._stage_name:
            self._end_stage()
            self._stage_name = stage
            self._stage = tracer().start_span(
                f"stage {stage}", context=trace.set_span_in_context(self.span), attributes={"capmesh.stage": stage}
            )

    def _end_stage(self) -> None:
        if self._stage is not None:
            self._stage.end()
            self._stage = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._end_stage()
        code = self.context.code() if exc is not None else None
        if exc is not None and not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.CANCELLED if not isinstance(exc, Exception) else grpc.StatusCode.UNKNOWN
        otel_context.detach(self._token)
        end_span(self.span, code or grpc.StatusCode.OK)


class TracingInterceptor(HandlerInterceptor):
    """A SERVER span per call (installed before the request-context interceptor, so that its logs
    and error mapping run inside the span). gRPC's own services (health checks and the endless
    health watches, reflection) are not traced."""

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith("/grpc."):
            return handler
        return rebuild_handler(handler, lambda inner: _traced(inner, method), lambda inner: _traced(inner, method))


def _traced(inner: Any, method: str) -> Any:
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _ServerSpan(method, context) as span:
                async for message in inner(request, context):
                    span.observe(message)
                    yield message

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _ServerSpan(method, context):
            return await inner(request, context)

    return call


# -- HTTP server spans --------------------------------------------------------------------------
class TracingMiddleware:
    """ASGI middleware: a SERVER span per HTTP request from its `traceparent` header, current while
    the app handles it (the in-process gRPC calls of the bridge become its children)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not enabled():
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        method = scope.get("method", "GET")
        span = tracer().start_span(
            f"HTTP {method}",
            context=context_of_metadata(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        )
        status = 0

        async def record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("capmesh.route")  # the route template, once a handler named it
            if route:
                span.update_name(f"HTTP {method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 or status == 0:
                span.set_status(Status(StatusCode.ERROR))
            otel_context.detach(token)
            span.end()

"""A small OTLP/gRPC trace collector for tests: `TraceService/Export` on a grpc.aio server on a
free port, in a thread (and event loop) of its own, so that it keeps receiving while a test blocks
on starting processes. It keeps every span it receives with the service.name of its sender.

`python -m tests.telemetry.collector` runs one as a process of its own (the tracing benchmark: its
decoding then weighs on no measured client): it prints `collector listening on HOST:PORT`, and at
SIGTERM `collector received N spans`."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

POLL_S = 0.05  # how often `wait_for` looks again; a poll of a condition, not a wait for readiness


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    kind: int  # trace_pb2.Span.SpanKind
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def server(self) -> bool:
        return self.kind == trace_pb2.Span.SPAN_KIND_SERVER


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Callable[[list[ReceivedSpan]], None]) -> None:
        self._received = received

    async def Export(self, request: Any, context: Any) -> Any:
        spans: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        self._received(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class Collector:
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise TimeoutError("the collector did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    async def _serve(self) -> None:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._add), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await server.stop(0)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, check: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 60.0
    ) -> list[ReceivedSpan]:
        """The spans of `trace_id` once `check(spans)` holds (spans arrive in batches)."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans(trace_id)
            if check(spans):
                return spans
            if time.monotonic() > deadline:
                described = "\n".join(f"  {s.service}: {s.name} {s.span_id} <- {s.parent_span_id}" for s in spans)
                raise AssertionError(f"spans of trace {trace_id} never satisfied the check; got:\n{described}")
            time.sleep(POLL_S)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    collector = Collector()
    print(f"collector listening on 127.0.0.1:{collector.port}", flush=True)
    stop.wait()
    collector.close()
    print(f"collector received {len(collector.spans())} spans", flush=True)


if __name__ == "__main__":
    main()

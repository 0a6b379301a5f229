"""Prometheus metrics of a capability service, served over HTTP on the `metrics_port` setting.

The gateway's metrics (gateway/metrics.py) see calls from outside; these see them from inside the
backend that ran them, per capability:
- `MetricsInterceptor` times each call of the capability's own services by method and status code,
  and the time to its first response message; from the messages themselves it reads the work done
  (every capability speaks the same shapes): steps of stepped progress (diffusion steps/s,
  talking-head frames/s), `usage.completion_tokens` of an LLM result (tokens/s), and a result's
  `duration_seconds` of media, which against the call's time gives the real-time factor (TTS,
  video, talking head);
- `ServiceCollector` reads, at scrape time, the admission queue (depth, in flight), the resident
  models and their memory, and device memory (CUDA when torch has initialised it; the process's
  resident memory as device "cpu" always);
- model load time and queue wait are observed where they happen (lifecycle, runtime).
Label values are bounded: capability and method names come from the catalogue and the served
services, model names from the served models, stages from the engines' fixed stage names, codes
from grpc.StatusCode.

`metrics_port`: -1 (the default) serves nothing and installs nothing; 0 picks a free port (logged
as `metrics.serving`); any other value is that port. Prometheus scrapes `http://HOST:PORT/metrics`.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from capmesh.services.runtime.interceptor import HandlerInterceptor, rebuild_handler

if TYPE_CHECKING:
    from capmesh.services.runtime.lifecycle import ModelManager
    from capmesh.services.runtime.streaming import Runtime

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RATE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
FACTOR_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)

request_seconds = Histogram(
    "capmesh_service_request_seconds",
    "Calls of a capability's methods, as the backend ran them, by method and status code.",
    ["capability", "method", "code"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
first_message_seconds = Histogram(
    "capmesh_service_first_message_seconds",
    "Time from the start of a streaming call to its first response message.",
    ["capability", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
queue_wait_seconds = Histogram(
    "capmesh_service_queue_wait_seconds",
    "Time a call waited in the admission queue for a concurrency slot.",
    ["capability"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
steps = Counter(
    "capmesh_service_steps_total",
    "Steps of stepped work (denoising steps, animated frames, sections) by stage; rate() is steps/s.",
    ["capability", "stage"],
    registry=REGISTRY,
)
tokens = Counter(
    "capmesh_service_generated_tokens_total",
    "Tokens generated (completion tokens of LLM results); rate() is tokens/s.",
    ["capability"],
    registry=REGISTRY,
)
tokens_per_second = Histogram(
    "capmesh_service_tokens_per_second",
    "Completion tokens per second of each LLM call.",
    ["capability"],
    buckets=RATE_BUCKETS,
    registry=REGISTRY,
)
real_time_factor = Histogram(
    "capmesh_service_real_time_factor",
    "Seconds spent per second of media produced (TTS, video, talking head); under 1 is faster than real time.",
    ["capability"],
    buckets=FACTOR_BUCKETS,
    registry=REGISTRY,
)
model_load_seconds = Histogram(
    "capmesh_model_load_seconds",
    "Time a model took to load, by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


# -- per call -----------------------------------------------------------------------------------
def _has(message: Any, field: str) -> bool:
    try:
        return bool(message.HasField(field))
    except (AttributeError, ValueError):  # not a message, or no such (message) field
        return False


class _CallMeasure:
    """What one call's messages say about the work done."""

    def __init__(self, capability: str, method: str) -> None:
        self.capability = capability
        self.method = method
        self.started = time.perf_counter()
        self.first = True
        self._steps: dict[str, int] = {}

    def message(self, message: Any, streaming: bool) -> None:
        if self.first and streaming:
            first_message_seconds.labels(self.capability, self.method).observe(time.perf_counter() - self.started)
        self.first = False
        if _has(message, "progress"):
            self._progress(message.progress)
        elif _has(message, "result"):
            self._result(message.result)
        elif not streaming:
            self._result(message)

    def _progress(self, progress: Any) -> None:
        if progress.total_steps <= 0 or progress.step <= 0:
            return
        done = self._steps.get(progress.stage, 0)
        if progress.step > done:
            steps.labels(self.capability, progress.stage).inc(progress.step - done)
            self._steps[progress.stage] = progress.step

    def _result(self, result: Any) -> None:
        elapsed = time.perf_counter() - self.started
        if _has(result, "usage") and result.usage.completion_tokens > 0:
            generated = result.usage.completion_tokens
            tokens.labels(self.capability).inc(generated)
            if elapsed > 0:
                tokens_per_second.labels(self.capability).observe(generated / elapsed)
        duration = getattr(result, "duration_seconds", 0.0)
        if isinstance(duration, float) and duration > 0:
            real_time_factor.labels(self.capability).observe(elapsed / duration)

    def done(self, code: grpc.StatusCode) -> None:
        request_seconds.labels(self.capability, self.method, code.name).observe(time.perf_counter() - self.started)


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    if exc is None:
        return grpc.StatusCode.OK
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if isinstance(exc, Exception) else grpc.StatusCode.CANCELLED


class MetricsInterceptor(HandlerInterceptor):
    """Times the calls of `services` (the capability's own; health, reflection and admin pass by)."""

    def __init__(self, capability: str, services: Iterable[str]) -> None:
        self._capability = capability
        self._services = frozenset(services)

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method.lstrip("/").rpartition("/")[0] not in self._services:
            return handler
        capability = self._capability
        return rebuild_handler(
            handler,
            lambda inner: _measured(inner, capability, method),
            lambda inner: _measured(inner, capability, method),
        )


@contextlib.contextmanager
def _measuring(capability: str, method: str, context: grpc.aio.ServicerContext) -> Iterator[_CallMeasure]:
    """Measures the call run inside: its duration is recorded under its status code however it ends."""
    measure, failure = _CallMeasure(capability, method), None
    try:
        yield measure
    except BaseException as exc:
        failure = exc
        raise
    finally:
        measure.done(_code(context, failure))


def _measured(inner: Any, capability: str, method: str) -> Any:
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _measuring(capability, method, context) as measure:
                async for message in inner(request, context):
                    measure.message(message, streaming=True)
                    yield message

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _measuring(capability, method, context) as measure:
            response = await inner(request, context)
            if response is not None:
                measure.message(response, streaming=False)
            return response

    return call


# -- at scrape time -----------------------------------------------------------------------------
def _process_resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        return 0


def _page_size() -> int:
    import resource

    return resource.getpagesize()


def device_memory() -> Iterator[tuple[str, str, float]]:
    """(device, kind, bytes): the process's resident memory as device "cpu", and for each CUDA
    device torch has initialised, its allocated, reserved and total memory. torch is never
    imported or initialised here: a process that has not touched CUDA reports only "cpu"."""
    yield "cpu", "resident", float(_process_resident_bytes())
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        yield device, "allocated", float(torch.cuda.memory_allocated(index))
        yield device, "reserved", float(torch.cuda.memory_reserved(index))
        yield device, "total", float(torch.cuda.get_device_properties(index).total_memory)


class ServiceCollector(Collector):
    """The gauges of one capability service, read when Prometheus scrapes."""

    def __init__(self, capability: str, runtime: Runtime, models: ModelManager | None) -> None:
        self._capability = capability
        self._runtime = runtime
        self._models = models

    def collect(self) -> Iterator[Metric]:
        capability, admission = self._capability, self._runtime.admission
        in_flight = GaugeMetricFamily("capmesh_service_in_flight", "Calls running now.", labels=["capability"])
        in_flight.add_metric([capability], admission.in_flight)
        queued = GaugeMetricFamily(
            "capmesh_service_queue_depth", "Calls waiting for a concurrency slot.", labels=["capability"]
        )
        queued.add_metric([capability], admission.queued)
        limit = GaugeMetricFamily(
            "capmesh_service_max_concurrency", "Calls that may run at once.", labels=["capability"]
        )
        limit.add_metric([capability], admission.max_concurrency)
        resident = GaugeMetricFamily(
            "capmesh_service_resident_models", "Models loaded and ready.", labels=["capability"]
        )
        model_memory = GaugeMetricFamily(
            "capmesh_model_memory_bytes", "Memory a loaded model holds, by model.", labels=["capability", "model"]
        )
        loaded = 0
        for status in self._models.status() if self._models is not None else ():
            if status.state.value == "loaded":
                loaded += 1
                model_memory.add_metric([capability, status.name], status.memory_bytes)
        resident.add_metric([capability], loaded)
        memory = GaugeMetricFamily(
            "capmesh_device_memory_bytes",
            "Device memory by device and kind (cuda: allocated, reserved, total; cpu: the process's resident memory).",
            labels=["capability", "device", "kind"],
        )
        for device, kind, value in device_memory():
            memory.add_metric([capability, device, kind], value)
        yield from (in_flight, queued, limit, resident, model_memory, memory)


class _Shared(Collector):
    """The process-wide metrics above, inside one endpoint's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class MetricsEndpoint:
    """The HTTP server of `/metrics` for one service: the process-wide metrics and the service's
    own gauges, in a registry of its own (tests run several services in one process)."""

    def __init__(self, capability: str, runtime: Runtime, models: ModelManager | None, host: str, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Shared())
        registry.register(ServiceCollector(capability, runtime, models))
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self._server.server_port)

    async def stop(self) -> None:
        """Stops serving (a hook of `RunningServer.extra`, stopped with the server)."""
        self._server.shutdown()
        self._server.server_close()

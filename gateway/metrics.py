"""The gateway's Prometheus metrics, defined once; the gRPC side records, the HTTP side serves.

A gateway of several worker processes (`--workers N`) is one target to Prometheus: the supervisor
gives the workers one folder (PROMETHEUS_MULTIPROC_DIR, prometheus_client's multiprocess mode),
each worker writes its counts there, and /metrics on any worker sums every worker's (gauges as
each one's `multiprocess_mode` says). Backend states are read from the registry when scraped.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it as it is imported

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

http_requests = Counter(
    "capmesh_http_requests_total",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
http_latency = Histogram(
    "capmesh_http_request_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
rpc_requests = Counter(
    "capmesh_rpc_requests_total", "Proxied gRPC calls by method and status code.", ["method", "code"], registry=REGISTRY
)
rpc_latency = Histogram(
    "capmesh_rpc_seconds",
    "Proxied gRPC call latency by method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
rpc_in_flight = Gauge(
    "capmesh_rpc_in_flight",
    "Proxied calls in flight by capability.",
    ["capability"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
proxied_bytes = Counter(
    "capmesh_proxied_bytes_total", "Payload bytes relayed by direction.", ["direction"], registry=REGISTRY
)
route_queue_depth = Gauge(
    "capmesh_route_queue_depth",
    "Calls waiting for a free backend by capability.",
    ["capability"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
route_queue_wait = Histogram(
    "capmesh_route_queue_wait_seconds",
    "Time a call waited for a free backend (the route queue) by service.",
    ["service"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
route_retries = Counter(
    "capmesh_route_retries_total",
    "Calls sent again to another backend, by service and the status code that caused it.",
    ["service", "code"],
    registry=REGISTRY,
)
# The queue is shared (Redis): every worker reads the same length.
job_queue_depth = Gauge(
    "capmesh_job_queue_depth",
    "Queued jobs by capability.",
    ["capability"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
jobs_total = Counter(
    "capmesh_jobs_total",
    "Jobs that reached a final state, by capability and state.",
    ["capability", "state"],
    registry=REGISTRY,
)
jobs_by_state = Gauge(
    "capmesh_jobs_current",
    "Jobs this gateway runs now, by state.",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# (capability, backend id, state name, whether it is the backend's current state) per backend and state
BackendStateRows = Callable[[], Iterable[tuple[str, str, str, bool]]]


class BackendStates:
    """`capmesh_backend_state`, read from the registries of this process when scraped: a backend's
    state is a fact about the registry, not a count, so it is asked for, never left behind by a
    removed backend, and the same from every worker (the registry is shared through Redis)."""

    name = "capmesh_backend_state"
    labelnames = ("capability", "backend", "state")

    def __init__(self) -> None:
        # Weak: a registry that is dropped without being closed (a test's) leaves with it.
        self._sources: list[weakref.WeakMethod[BackendStateRows]] = []

    def watch(self, rows: BackendStateRows) -> None:
        """`rows`: a registry's bound method, read at every scrape until `forget` or the registry goes."""
        self._sources.append(weakref.WeakMethod(rows))

    def forget(self, rows: BackendStateRows) -> None:
        self._sources = [source for source in self._sources if source() not in (None, rows)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            self.name, "1 for the backend's current state, 0 for the others.", labels=self.labelnames
        )
        self._sources = [source for source in self._sources if source() is not None]
        for source in self._sources:
            rows = source()
            for capability, backend, state, current in rows() if rows is not None else ():
                family.add_metric([capability, backend, state], 1.0 if current else 0.0)
        yield family


backend_states = BackendStates()
REGISTRY.register(backend_states)


def exposition() -> bytes:
    """The text /metrics serves: this process's metrics, or with workers, the sum of all of theirs."""
    folder = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not folder:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, folder)
    registry.register(backend_states)
    return generate_latest(registry)

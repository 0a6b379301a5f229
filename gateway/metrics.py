"""The gateway's Prometheus metrics, defined once; the gRPC side records, the HTTP side serves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
    "capmesh_rpc_in_flight", "Proxied calls in flight by capability.", ["capability"], registry=REGISTRY
)
proxied_bytes = Counter(
    "capmesh_proxied_bytes_total", "Payload bytes relayed by direction.", ["direction"], registry=REGISTRY
)
route_queue_depth = Gauge(
    "capmesh_route_queue_depth", "Calls waiting for a free backend by capability.", ["capability"], registry=REGISTRY
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
backend_state = Gauge(
    "capmesh_backend_state",
    "1 for the backend's current state, 0 for the others.",
    ["capability", "backend", "state"],
    registry=REGISTRY,
)
job_queue_depth = Gauge("capmesh_job_queue_depth", "Queued jobs by capability.", ["capability"], registry=REGISTRY)
jobs_total = Counter(
    "capmesh_jobs_total",
    "Jobs that reached a final state, by capability and state.",
    ["capability", "state"],
    registry=REGISTRY,
)
jobs_by_state = Gauge("capmesh_jobs_current", "Jobs known to this gateway by state.", ["state"], registry=REGISTRY)

"""The gateway's settings: one frozen object read once from `CAPMESH_GATEWAY_*` and CLI flags.

The jobs, files, routing and HTTP parts of the gateway all read this one object; nothing copies its
fields into settings of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capmesh.services.runtime.settings import MESH_SECRET_ENV, ProcessSettings, check

ENV_PREFIX = "GATEWAY"
GATEWAY_GRPC_PORT = 50051
GATEWAY_HTTP_PORT = 8080


@dataclass(frozen=True)
class GatewaySettings(ProcessSettings):
    port: int = GATEWAY_GRPC_PORT  # gRPC: capability proxy, registry, jobs, files, operations
    http_port: int = GATEWAY_HTTP_PORT  # HTTP/JSON + SSE bridge, OpenAI endpoints, console; 0 picks one
    instance_id: str = ""  # names this gateway in shared Redis state; empty: host:port:pid
    redis_url: str = ""  # redis://host:port/db; empty: in-memory registry and job store
    # the workers share the registry, jobs, file descriptions and quotas through Redis (gateway/workers.py)
    workers: int = 1  # gateway processes on the same two ports (SO_REUSEPORT); above 1 needs redis_url
    # uvloop: measured ~20 % less gateway CPU per relayed stream message (16 streams) and ~5 % per
    # unary call than asyncio's own loop (benchmarks/bench_gateway.py); asyncio: the standard library's
    event_loop: str = "uvloop"

    # registry and health
    backends_file: str = ""  # YAML or JSON list of static backends
    heartbeat_interval_s: float = 2.0
    lease_s: float = 10.0  # a registered backend without a heartbeat for this long is dropped
    # all registered backends together send at most this many heartbeats a second: past
    # heartbeat_budget_per_s * heartbeat_interval_s backends, interval and lease grow in proportion
    heartbeat_budget_per_s: float = 10.0
    failure_threshold: int = 3  # backend-caused failures in a row before ERROR
    cooldown_s: float = 15.0  # ERROR backends rest this long before taking calls again

    # routing
    route_wait_queue: int = 64  # calls per capability waiting for a free backend
    route_wait_s: float = 10.0  # how long such a call may wait before RESOURCE_EXHAUSTED
    gpu_mode: str = "resident"  # resident: all loaded; exclusive: one member of a device group at a time

    # files
    files_dir: str = ""  # empty: $CAPMESH_HOME/files or ~/.cache/capmesh/files
    # s3://bucket/prefix: file bytes in a bucket that every gateway reads (endpoint and credentials from
    # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); empty: in files_dir, on this machine only
    files_url: str = ""
    file_ttl_s: float = 24 * 3600.0  # (the size limit, max_file_bytes, is shared with the services)

    # jobs
    job_queue_limit: int = 1000  # queued jobs per capability; beyond it RESOURCE_EXHAUSTED
    job_max_attempts: int = 3
    job_timeout_s: float = 3600.0
    job_lease_s: float = 15.0  # a runner renews its lease; an expired lease lets another take the job
    job_result_ttl_s: float = 24 * 3600.0
    job_record_ttl_s: float = 7 * 24 * 3600.0
    job_backoff_base_s: float = 1.0
    job_backoff_max_s: float = 30.0

    # HTTP bridge and security
    max_body_bytes: int = 64 * 1024 * 1024
    sse_keepalive_s: float = 15.0
    api_keys: tuple[str, ...] = ()  # client keys, required on HTTP (Bearer) and gRPC (metadata) when set
    keys_file: str = ""  # JSON lines of keys: id, role (client, backend, admin), sha256, quotas; reloaded on change
    keys_reload_s: float = 2.0  # how often the keys file's modification time is checked (SIGHUP reloads at once)
    # The backend credential: registering needs it, and the gateway sends it to every backend.
    mesh_secret: str = field(default="", metadata={"env": MESH_SECRET_ENV})  # also read from CAPMESH_MESH_SECRET
    backend_tls_ca_file: str = ""  # the mesh CA that backends' certificates are checked against (mTLS)
    backend_tls_cert_file: str = ""  # the gateway's client certificate for backends, signed by the mesh CA
    backend_tls_key_file: str = ""  # its private key
    tls_cert_file: str = ""
    tls_key_file: str = ""

    # quotas for keys that name none (keys-file entries may set their own); 0: unlimited
    quota_requests_per_minute: int = 0
    quota_concurrent_calls: int = 0
    quota_llm_tokens_per_minute: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.http_port <= 65535, "http_port", self.http_port, "must be between 0 and 65535")
        check(self.gpu_mode in {"resident", "exclusive"}, "gpu_mode", self.gpu_mode, "must be resident or exclusive")
        check(self.failure_threshold >= 1, "failure_threshold", self.failure_threshold, "must be at least 1")
        check(
            self.lease_s > self.heartbeat_interval_s,
            "lease_s",
            self.lease_s,
            f"must be longer than heartbeat_interval_s ({self.heartbeat_interval_s})",
        )
        check(self.heartbeat_budget_per_s > 0, "heartbeat_budget_per_s", self.heartbeat_budget_per_s, "must be above 0")
        check(self.workers >= 1, "workers", self.workers, "must be at least 1")
        check(self.event_loop in {"uvloop", "asyncio"}, "event_loop", self.event_loop, "must be uvloop or asyncio")
        check(
            self.workers == 1 or bool(self.redis_url),
            "workers",
            self.workers,
            "needs redis_url: the worker processes share the registry, jobs, files and quotas through Redis",
        )
        check(self.job_max_attempts >= 1, "job_max_attempts", self.job_max_attempts, "must be at least 1")
        check(
            self.redis_url == "" or self.redis_url.startswith(("redis://", "rediss://", "unix://")),
            "redis_url",
            self.redis_url,
            "must start with redis://, rediss:// or unix://",
        )
        check(
            self.files_url == "" or (self.files_url.startswith("s3://") and len(self.files_url) > len("s3://")),
            "files_url",
            self.files_url,
            "must be empty (files on local disk) or s3://bucket[/prefix]",
        )
        check(self.keys_reload_s > 0, "keys_reload_s", self.keys_reload_s, "must be greater than 0")
        check(
            bool(self.backend_tls_cert_file) == bool(self.backend_tls_key_file),
            "backend_tls_cert_file",
            self.backend_tls_cert_file,
            "and backend_tls_key_file must be set together",
        )
        for name in ("quota_requests_per_minute", "quota_concurrent_calls", "quota_llm_tokens_per_minute"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be 0 (unlimited) or more")
        check(
            bool(self.tls_cert_file) == bool(self.tls_key_file),
            "tls_cert_file",
            self.tls_cert_file,
            "and tls_key_file must be set together",
        )

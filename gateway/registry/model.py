"""What the registry knows about a backend: its record (shared) and its health (this gateway's).

A `BackendRecord` is what the backend registered (or the static file said): address, capability,
services, models, limits. In Redis mode records are shared by every gateway. A `BackendEntry` adds
what this gateway tracks on its own: health state, failures, cooldown, calls in flight, and the
channel it dials the backend on.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, cast

import grpc
from google.protobuf import timestamp_pb2

from capmesh.gateway.v1 import registry_service_pb2 as pb

STATIC = "static"
REGISTERED = "registered"

# Codes that say the backend itself failed; caller mistakes (INVALID_ARGUMENT, NOT_FOUND,
# FAILED_PRECONDITION, ...) and the caller's own deadline or cancellation never count.
BACKEND_FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)

# Channel options: reconnect quickly after a backend restarts on the same address, and notice a
# backend host that went silent (power lost, link cut: no reset, packets just vanish) within 2 s.
# A dead process closes its connections, but a dead host or link leaves them open, and then the
# health Watch and every call on it would hang. A keepalive ping every half second, answered
# within half a second, closes such a connection within 1 s (the ack comes from the backend's gRPC
# transport, not its Python code, so a busy engine does not delay it): the Watch breaks (the
# backend goes UNAVAILABLE) and the calls on it end UNAVAILABLE before any output, so the router
# retries them on another backend. gRPC sends pings only while the gateway sends on the connection
# and for four pings (2 s) after: a backend taking calls is watched closely, including one the
# router has just stopped choosing because its calls stalled, and an idle one costs nothing (1000
# idle backends: benchmarks/bench_registry.py) and, if its host dies, is noticed by the first call
# sent to it or by its lease. Backends' servers accept pings this often (server_options in
# services/runtime/server.py); a gRPC server that does not (a default grpc-go or C++ server allows
# one per 5 minutes) answers with GOAWAY too_many_pings, after which gRPC pings it less often.
BACKEND_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 5 * 1024 * 1024),
    ("grpc.max_send_message_length", 5 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 500),
    ("grpc.keepalive_timeout_ms", 500),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 4),  # the library's default: 2
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.enable_retries", 0),  # the router retries itself, on another backend
]


class State(enum.IntEnum):
    UNKNOWN = pb.BACKEND_STATE_UNKNOWN
    AVAILABLE = pb.BACKEND_STATE_AVAILABLE
    UNAVAILABLE = pb.BACKEND_STATE_UNAVAILABLE
    ERROR = pb.BACKEND_STATE_ERROR

    def to_proto(self) -> pb.BackendState:
        # The generated stubs type enum fields by their enum class; the values are plain ints.
        return cast(pb.BackendState, int(self))


def backend_id_for(capability: str, address: str) -> str:
    """A stable id: the same backend re-registering (or listed statically) keeps its id."""
    return f"{capability}-{address}".replace(":", "-").replace("/", "-")


@dataclass(frozen=True)
class BackendRecord:
    backend_id: str
    address: str
    capability: str
    services: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    max_concurrency: int = 0  # 0: no limit known
    max_queue: int = 0  # calls the backend itself lets wait in line (reporting queue_position)
    device: str = ""
    device_group: str = ""
    version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    source: str = REGISTERED

    @classmethod
    def from_proto(cls, backend: pb.Backend, source: str) -> BackendRecord:
        return cls._of({**{name: getattr(backend, name) for name in WIRE_FIELDS}, "source": source})

    def to_proto(self) -> pb.Backend:
        return pb.Backend(**{name: getattr(self, name) for name in WIRE_FIELDS})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> BackendRecord:
        return cls._of(json.loads(text))

    @classmethod
    def _of(cls, values: dict[str, Any]) -> BackendRecord:
        """A record from plain values (a proto's fields, or JSON): lists become tuples, the labels a dict."""
        for name in ("services", "models", "loaded_models"):
            values[name] = tuple(values.get(name) or ())
        values["labels"] = dict(values.get("labels") or {})
        return cls(**values)

    def with_load(self, loaded_models: tuple[str, ...]) -> BackendRecord:
        return replace(self, loaded_models=loaded_models)


# A record's fields are `pb.Backend`'s, by the same names, plus `source` (how this gateway learned of
# the backend, which the backend itself never sends).
WIRE_FIELDS = tuple(f.name for f in fields(BackendRecord) if f.name != "source")


def _timestamp(wall: float | None) -> timestamp_pb2.Timestamp | None:
    if wall is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(wall * 1e9))
    return stamp


class BackendEntry:
    """One backend as this gateway sees it. Mutated only on the event loop."""

    def __init__(self, record: BackendRecord, channel: grpc.aio.Channel) -> None:
        self.record = record
        self.state = State.UNKNOWN
        self.serving = False  # what the liveness probe said last
        self.in_flight = 0  # calls holding a model slot (counted against max_concurrency)
        self.passing = 0  # calls that run no model (listing, status), never counted
        self.consecutive_failures = 0
        self.cooldown_until = 0.0  # monotonic
        self.last_error = ""
        self.last_error_wall: float | None = None
        self.last_success_wall: float | None = None
        self.registration_expires = 0.0  # monotonic; registered backends in memory mode (0: never)
        self.loaded: set[str] = set(record.loaded_models)
        self.retired = False  # removed from the registry; the channel closes once no call uses it
        self.channel = channel  # dialled with mTLS when the mesh has it (Registry.dial); no secret
        self._unary: dict[str, object] = {}
        self._unary_stream: dict[str, object] = {}
        self._stream_unary: dict[str, object] = {}
        self._stream_stream: dict[str, object] = {}

    @property
    def backend_id(self) -> str:
        return self.record.backend_id

    # -- raw multicallables, created once per method (identity codecs: bytes in, bytes out) ----
    def unary(self, method: str):
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(method, _registered_method=True)
        return call

    def unary_stream(self, method: str):
        call = self._unary_stream.get(method)
        if call is None:
            call = self._unary_stream[method] = self.channel.unary_stream(method, _registered_method=True)
        return call

    def stream_unary(self, method: str):
        call = self._stream_unary.get(method)
        if call is None:
            call = self._stream_unary[method] = self.channel.stream_unary(method, _registered_method=True)
        return call

    def stream_stream(self, method: str):
        call = self._stream_stream.get(method)
        if call is None:
            call = self._stream_stream[method] = self.channel.stream_stream(method, _registered_method=True)
        return call

    # -- routing facts -------------------------------------------------------------------------
    def routable(self, now: float) -> bool:
        """AVAILABLE, or ERROR whose cooldown is over (a call then decides: success heals it)."""
        state = self.state
        return state is State.AVAILABLE or (state is State.ERROR and now >= self.cooldown_until)

    def has_room(self) -> bool:
        limit = self.record.max_concurrency
        return limit <= 0 or self.in_flight < limit

    def has_line_room(self) -> bool:
        """Every slot is taken but the backend's own line has a place (it reports queue_position)."""
        return self.in_flight < self.record.max_concurrency + self.record.max_queue

    def load(self) -> float:
        limit = self.record.max_concurrency
        return self.in_flight / limit if limit > 0 else float(self.in_flight)

    def cooldown_remaining(self, now: float | None = None) -> float:
        if self.state is not State.ERROR:
            return 0.0
        return max(0.0, self.cooldown_until - (time.monotonic() if now is None else now))

    def to_proto(self, now: float) -> pb.BackendStatus:
        record = self.record.to_proto()
        del record.loaded_models[:]
        record.loaded_models.extend(sorted(self.loaded))
        return pb.BackendStatus(
            backend=record,
            state=self.state.to_proto(),
            last_success_time=_timestamp(self.last_success_wall),
            last_error=self.last_error,
            last_error_time=_timestamp(self.last_error_wall),
            in_flight=self.in_flight,
            cooldown_remaining_seconds=self.cooldown_remaining(now),
            consecutive_failures=self.consecutive_failures,
            source=self.record.source,
        )

    def retire(self) -> None:
        """Leaves the registry. Calls still running on it (a backend that deregistered while shutting
        down gracefully still finishes them) keep the channel open until the last one ends."""
        self.retired = True
        if self.in_flight == 0 and self.passing == 0:
            asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        await self.channel.close()

"""Which failures a job retries, and how long it waits before the next attempt."""

from __future__ import annotations

import random

import grpc
import structlog
from google.rpc import code_pb2, status_pb2

from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import read_details, status_of, to_status_proto

log = structlog.get_logger("capmesh.jobs")

# Worth another attempt: the backend or the route may be back, or less busy, a moment later.
RETRYABLE_CODES = frozenset({code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED, code_pb2.ABORTED})
# How a backend that died mid-stream shows up when the transport, not the server, ends the call.
_TRANSPORT_DEATH = (
    "socket closed",
    "connection reset",
    "rst_stream",
    "stream removed",
    "goaway",
    "eof",
    "broken pipe",
    "connection refused",
)


class StreamEndedEarly(Exception):
    """The backend's stream ended without its final result: the backend went away mid-job."""


def classify(exc: BaseException) -> tuple[status_pb2.Status, bool, float | None]:
    """(the google.rpc.Status to record, whether to retry, the server's retry hint)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        status = status_of(exc)
        died = code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED) and any(
            marker in (exc.details() or "").lower() for marker in _TRANSPORT_DEATH
        )
        # CANCELLED that we did not ask for comes from the backend going away (server stop).
        died = died or code == grpc.StatusCode.CANCELLED
        return status, status.code in RETRYABLE_CODES or died, read_details(status).retry_after_s
    if isinstance(exc, CapmeshError):
        status = to_status_proto(exc)
        return status, status.code in RETRYABLE_CODES, exc.retry_after_s
    if isinstance(exc, StreamEndedEarly):
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(exc)), True, None
    log.error("job.crashed", exc_info=exc)
    return (
        status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error while running the job: {exc!r}"),
        False,
        None,
    )


def backoff_s(
    attempt: int, base_s: float, max_s: float, hint_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential with "equal jitter": half fixed, half random, so retries of many jobs spread out."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return max(delay, hint_s or 0.0)

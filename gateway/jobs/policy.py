"""Which failures a job retries, and how long it waits before the next attempt."""

from __future__ import annotations

import random

import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import to_status_proto

log = structlog.get_logger("capmesh.jobs")

# Worth another attempt: the backend or the route may be back, or less busy, a moment later.
RETRYABLE_CODES = frozenset({code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED, code_pb2.ABORTED})
# How a backend that died mid-stream shows up when the transport, not the server, ends the call.
_TRANSPORT_DEATH = ("socket closed", "connection reset", "rst_stream", "stream removed", "goaway", "eof",
                    "broken pipe", "connection refused")


class StreamEndedEarly(Exception):
    """The backend's stream ended without its final result: the backend went away mid-job."""


def _retry_after(status: status_pb2.Status) -> float | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def classify(exc: BaseException) -> tuple[status_pb2.Status, bool, float | None]:
    """(the google.rpc.Status to record, whether to retry, the server's retry hint)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        status = rpc_status.from_call(exc) or status_pb2.Status(code=code.value[0], message=exc.details() or "")
        died = code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED) and any(
            marker in (exc.details() or "").lower() for marker in _TRANSPORT_DEATH)
        # CANCELLED that we did not ask for comes from the backend going away (server stop).
        died = died or code == grpc.StatusCode.CANCELLED
        return status, status.code in RETRYABLE_CODES or died, _retry_after(status)
    if isinstance(exc, CapmeshError):
        status = to_status_proto(exc)
        return status, status.code in RETRYABLE_CODES, getattr(exc, "retry_after_s", None)
    if isinstance(exc, StreamEndedEarly):
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(exc)), True, None
    log.error("job.crashed", exc_info=exc)
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error while running the job: {exc!r}"), False, None


def backoff_s(attempt: int, base_s: float, max_s: float, hint_s: float | None = None,
              rng: random.Random | None = None) -> float:
    """Exponential with "equal jitter": half fixed, half random, so retries of many jobs spread out."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return max(delay, hint_s or 0.0)

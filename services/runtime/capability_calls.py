"""What a failed call from one capability to another (through the gateway) means to the caller.

A service that uses another capability (talking heads speak text through TTS; DocGen writes through
the LLM) passes on the other service's code, reason and retry delay, so that its own caller can tell
a retryable failure (UNAVAILABLE, RESOURCE_EXHAUSTED) from its own mistake (INVALID_ARGUMENT).
"""

from __future__ import annotations

import grpc

from capmesh.services.runtime.errors import (
    Cancelled,
    CapmeshError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from capmesh.services.runtime.status import read_details, status_of


def error_from_capability(exc: grpc.aio.AioRpcError, capability: str, field: str) -> CapmeshError:
    """A failed call to `capability` as a domain error with the same code, its reason and retry delay
    kept. An INVALID_ARGUMENT keeps the other service's field violations (or names `field`, the
    calling request's field that chose what the other service refused)."""
    details = read_details(status_of(exc))
    message = f"the {capability} capability answered {exc.code().name}: {exc.details()}"
    code, reason, prefix = exc.code(), details.reason or None, capability.upper()
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(message, reason=reason or f"{prefix}_UNAVAILABLE", retry_after_s=details.retry_after_s)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, reason=reason or f"{prefix}_BUSY", retry_after_s=details.retry_after_s)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(message)
    if code == grpc.StatusCode.CANCELLED:
        return Cancelled(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = [FieldViolation(f, d) for f, d in details.field_violations] or [FieldViolation(field, message)]
        return InvalidArgument(violations, message=message, reason=reason)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message, reason=reason)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(message, reason=reason)
    return Internal(message, reason=reason or f"{prefix}_FAILED")

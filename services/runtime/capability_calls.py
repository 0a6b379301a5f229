"""What a failed call from one capability to another (through the gateway) means to the caller.

A service that uses another capability (talking heads speak text through TTS; DocGen writes through
the LLM) passes on the other service's code, reason and retry delay, so that its own caller can tell
a retryable failure (UNAVAILABLE, RESOURCE_EXHAUSTED) from its own mistake (INVALID_ARGUMENT).
"""

from __future__ import annotations

import grpc

from capmesh.services.runtime.errors import CapmeshError, FieldViolation, Internal, InvalidArgument, error_type
from capmesh.services.runtime.status import read_details, status_of

# The codes passed on to the caller as they are; any other (UNAUTHENTICATED: this service's own
# credential) is this service's failure, INTERNAL. With a default reason suffix where the other
# service gave no reason: <CAPABILITY>_<suffix>.
PASSED_ON: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "BUSY",
    grpc.StatusCode.DEADLINE_EXCEEDED: "",
    grpc.StatusCode.CANCELLED: "",
    grpc.StatusCode.NOT_FOUND: "",
    grpc.StatusCode.FAILED_PRECONDITION: "",
}


def error_from_capability(exc: grpc.aio.AioRpcError, capability: str, field: str) -> CapmeshError:
    """A failed call to `capability` as a domain error with the same code, its reason and retry delay
    kept. An INVALID_ARGUMENT keeps the other service's field violations (or names `field`, the
    calling request's field that chose what the other service refused)."""
    details = read_details(status_of(exc))
    message = f"the {capability} capability answered {exc.code().name}: {exc.details()}"
    code, reason, prefix = exc.code(), details.reason or None, capability.upper()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = [FieldViolation(f, d) for f, d in details.field_violations] or [FieldViolation(field, message)]
        return InvalidArgument(violations, message=message, reason=reason)
    if code not in PASSED_ON:
        return Internal(message, reason=reason or f"{prefix}_FAILED")
    suffix = PASSED_ON[code]
    default_reason = f"{prefix}_{suffix}" if suffix else None
    return error_type(code.name)(message, reason=reason or default_reason, retry_after_s=details.retry_after_s)

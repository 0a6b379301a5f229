"""The client's exception hierarchy, mapped from gRPC status codes with their rich details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from capmesh.services.runtime.status import read_details, status_of


@dataclass
class CapmeshClientError(Exception):
    """A failed call: the status code, message, and the details the server attached."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        return text


class InvalidRequestError(CapmeshClientError):
    """INVALID_ARGUMENT: `field_violations` names each bad field."""


class NotFoundError(CapmeshClientError):
    """NOT_FOUND: an unknown model, file or job."""


class RefusedError(CapmeshClientError):
    """FAILED_PRECONDITION: a valid request the current state refuses (e.g. NO_FACE_DETECTED)."""


class BusyError(CapmeshClientError):
    """RESOURCE_EXHAUSTED: try again after `retry_after_s`."""


class UnavailableError(CapmeshClientError):
    """UNAVAILABLE: no healthy backend or a dependency is down; retrying may help."""


class AuthError(CapmeshClientError):
    """UNAUTHENTICATED or PERMISSION_DENIED."""


class CancelledError(CapmeshClientError):
    """CANCELLED or DEADLINE_EXCEEDED."""


class ServerError(CapmeshClientError):
    """INTERNAL, UNKNOWN, DATA_LOSS and anything else."""


_BY_CODE: dict[grpc.StatusCode, type[CapmeshClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: RefusedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BusyError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.DEADLINE_EXCEEDED: CancelledError,
}


def from_rpc_error(error: grpc.RpcError) -> CapmeshClientError:
    """Converts a failed call into the matching CapmeshClientError subclass."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    status = status_of(error)
    details = read_details(status)
    return _BY_CODE.get(code, ServerError)(
        code=code,
        message=status.message,
        reason=details.reason,
        domain=details.domain,
        field_violations=details.field_violations,
        retry_after_s=details.retry_after_s,
    )

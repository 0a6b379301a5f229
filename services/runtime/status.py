"""Rich errors on the wire: the one place that builds and reads `google.rpc.Status` details.

Every error capmesh sends carries ErrorInfo(reason, domain); INVALID_ARGUMENT adds BadRequest field
violations; RESOURCE_EXHAUSTED and retryable UNAVAILABLE add RetryInfo. Servers build statuses here
from domain errors (`to_grpc_status`), the HTTP bridge builds its own refusals here
(`build_status`), and the gateway's jobs, the HTTP bridge and the Python client read a failed call's
details here (`status_of`, `read_details`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from capmesh.services.runtime.errors import DOMAIN, CapmeshError, InvalidArgument


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def build_status(
    code: str,
    message: str,
    *,
    reason: str = "",
    metadata: Mapping[str, str] | None = None,
    violations: Iterable[tuple[str, str]] = (),
    retry_after_s: float | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with capmesh's details; `code` is a canonical code name such as "NOT_FOUND"."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason or code, domain=DOMAIN, metadata=metadata or {}))]
    field_violations = [
        error_details_pb2.BadRequest.FieldViolation(field=name, description=rule) for name, rule in violations
    ]
    if field_violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=field_violations)))
    if retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(max(0.0, retry_after_s) * 1e9))
        details.append(_pack(retry))
    return status_pb2.Status(code=code_pb2.Code.Value(code), message=message, details=details)


def to_status_proto(error: CapmeshError) -> status_pb2.Status:
    violations = [(v.field, v.description) for v in error.violations] if isinstance(error, InvalidArgument) else []
    return build_status(
        error.code,
        error.message,
        reason=error.reason,
        metadata=error.metadata,
        violations=violations,
        retry_after_s=error.retry_after_s,
    )


def to_grpc_status(error: CapmeshError) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(error))


async def abort_with_error(context: grpc.aio.ServicerContext, error: CapmeshError) -> None:
    """Ends the call with the error's status (raises, like context.abort)."""
    await context.abort_with_status(to_grpc_status(error))


def status_of(error: grpc.RpcError) -> status_pb2.Status:
    """A failed call's google.rpc.Status: the one its trailers carry, else one made from its code."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):  # trailers that disagree with the code, or not a call at all
        status = None
    if status is not None:
        return status
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    return status_pb2.Status(code=code.value[0], message=message or "")


@dataclass
class Details:
    """What a status's details say, by kind; empty values where a kind is absent."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None


def read_details(status: status_pb2.Status) -> Details:
    found = Details()
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            found.reason, found.domain, found.metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            found.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            found.retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    return found

"""Maps domain errors to gRPC statuses with google.rpc rich details.

Every error carries ErrorInfo(reason, domain); INVALID_ARGUMENT adds BadRequest field violations;
RESOURCE_EXHAUSTED and retryable UNAVAILABLE add RetryInfo.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from capmesh.services.runtime.errors import (
    DOMAIN,
    CapmeshError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry_delay(seconds: float) -> duration_pb2.Duration:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return delay


def to_status_proto(error: CapmeshError) -> status_pb2.Status:
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))]
    if isinstance(error, InvalidArgument):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ])))
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(error, (ResourceExhausted, Unavailable)) and retry_after is not None:
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=_retry_delay(retry_after))))
    return status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message, details=details)


def to_grpc_status(error: CapmeshError) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(error))


async def abort_with_error(context: grpc.aio.ServicerContext, error: CapmeshError) -> None:
    """Ends the call with the error's status (raises, like context.abort)."""
    await context.abort_with_status(to_grpc_status(error))


def status_details(rpc_error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """Reads the google.rpc.Status from a failed call's trailing metadata (for clients and tests)."""
    return rpc_status.from_call(rpc_error)


def unpack_details(status: status_pb2.Status) -> dict[str, object]:
    """Returns the known details of a status by kind: error_info, bad_request, retry_info."""
    kinds = {
        "error_info": error_details_pb2.ErrorInfo,
        "bad_request": error_details_pb2.BadRequest,
        "retry_info": error_details_pb2.RetryInfo,
    }
    found: dict[str, object] = {}
    for detail in status.details:
        for key, message_type in kinds.items():
            if detail.Is(message_type.DESCRIPTOR):
                message = message_type()
                detail.Unpack(message)
                found[key] = message
    return found

"""gRPC statuses as HTTP errors: the standard code mapping and a JSON body with rich details.

The body is `{"code": <gRPC code number>, "status": "<CODE_NAME>", "message": ..., "details": [...]}`
where details are the status's google.rpc details in the proto3 JSON mapping (with `@type`):
ErrorInfo, BadRequest field violations, RetryInfo. RetryInfo also becomes a `Retry-After` header.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, status_pb2

from capmesh.services.runtime.status import Details, build_status, read_details, status_of

HTTP_STATUS_OF_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


@dataclass
class HttpError(Exception):
    """A failure ready to be rendered: a google.rpc.Status plus the HTTP status it maps to."""

    status: status_pb2.Status
    headers: dict[str, str] = field(default_factory=dict)
    status_override: int | None = None  # an HTTP status with no gRPC twin, such as 413

    @property
    def code_name(self) -> str:
        return code_pb2.Code.Name(self.status.code)

    @property
    def http_status(self) -> int:
        return self.status_override or HTTP_STATUS_OF_CODE.get(self.code_name, 500)

    @property
    def message(self) -> str:
        return self.status.message

    def body(self) -> dict:
        return {
            "code": self.status.code,
            "status": self.code_name,
            "message": self.status.message,
            "details": [detail_to_json(d) for d in self.status.details],
        }

    def details(self) -> Details:
        return read_details(self.status)

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        retry_after = self.details().retry_after_s
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return headers


def detail_to_json(packed: any_pb2.Any) -> dict:
    try:
        return json_format.MessageToDict(packed)
    except (TypeError, KeyError, json_format.Error):
        # A detail type this process does not know: keep it opaque rather than fail the reply.
        return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}


def make_error(
    code: str,
    message: str,
    *,
    reason: str | None = None,
    violations: list[tuple[str, str]] | None = None,
    retry_after_s: float | None = None,
    headers: dict[str, str] | None = None,
    http_status: int | None = None,
) -> HttpError:
    """An error raised by the HTTP side itself, shaped like the ones the gRPC side returns."""
    status = build_status(
        code, message, reason=reason or code, violations=violations or (), retry_after_s=retry_after_s
    )
    return HttpError(status, dict(headers or {}), http_status)


def invalid_field(field_path: str, description: str) -> HttpError:
    return make_error("INVALID_ARGUMENT", f"{field_path}: {description}", violations=[(field_path, description)])


def message_too_large(detail: str) -> HttpError:
    """413 for a request over the gRPC message limit: the caller's body is too large, no server is busy."""
    return make_error(
        "RESOURCE_EXHAUSTED",
        f"the request is too large for one gRPC message: {detail}",
        reason="MESSAGE_TOO_LARGE",
        http_status=413,
    )


# What grpc itself says (with no rich details) when a request is over the channel's send limit.
_GRPC_SEND_LIMIT = "Sent message larger than max"


def from_rpc_error(error: grpc.RpcError) -> HttpError:
    """The call's google.rpc.Status (rich details from its trailers) or one made from its code."""
    status = status_of(error)
    if status.code == code_pb2.RESOURCE_EXHAUSTED and _GRPC_SEND_LIMIT in status.message:
        return message_too_large(status.message)
    return HttpError(status)

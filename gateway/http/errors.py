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
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from capmesh.services.runtime.errors import DOMAIN

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

    def retry_after_s(self) -> float | None:
        retry = self.detail(error_details_pb2.RetryInfo)
        if retry is None:
            return None
        return retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9

    def detail(self, message_type):
        for packed in self.status.details:
            if packed.Is(message_type.DESCRIPTOR):
                found = message_type()
                packed.Unpack(found)
                return found
        return None

    def field_violations(self) -> list[tuple[str, str]]:
        bad_request = self.detail(error_details_pb2.BadRequest)
        if bad_request is None:
            return []
        return [(v.field, v.description) for v in bad_request.field_violations]

    def reason(self) -> str:
        info = self.detail(error_details_pb2.ErrorInfo)
        return info.reason if info is not None else ""

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        retry_after = self.retry_after_s()
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return headers


def detail_to_json(packed: any_pb2.Any) -> dict:
    try:
        return json_format.MessageToDict(packed)
    except (TypeError, KeyError, json_format.Error):
        # A detail type this process does not know: keep it opaque rather than fail the reply.
        return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def make_error(code: str, message: str, *, reason: str | None = None,
               violations: list[tuple[str, str]] | None = None, retry_after_s: float | None = None,
               headers: dict[str, str] | None = None, http_status: int | None = None) -> HttpError:
    """An error raised by the HTTP side itself, shaped like the ones the gRPC side returns."""
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason or code, domain=DOMAIN))]
    if violations:
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations])))
    if retry_after_s is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int(retry_after_s * 1e9))
        details.append(_packed(info))
    status = status_pb2.Status(code=code_pb2.Code.Value(code), message=message, details=details)
    return HttpError(status, dict(headers or {}), http_status)


def invalid_field(field_path: str, description: str) -> HttpError:
    return make_error("INVALID_ARGUMENT", f"{field_path}: {description}", violations=[(field_path, description)])


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> HttpError:
    """The call's google.rpc.Status (rich details from its trailers) or one made from its code."""
    status = None
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is None:
        code = error.code()
        status = status_pb2.Status(code=code.value[0], message=error.details() or code.name)
    return HttpError(status)

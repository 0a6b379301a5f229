"""What a failed call from one capability to another (through the gateway) means to the caller.

A service that uses another capability (talking heads speak text through TTS; DocGen writes through
the LLM) passes on the other service's code, reason and retry delay, so that its own caller can tell
a retryable failure (UNAVAILABLE, RESOURCE_EXHAUSTED) from its own mistake (INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from capmesh.services.runtime.errors import (
    CapmeshError,
    FieldViolation,
    Internal,
    InvalidArgument,
    Unavailable,
    error_type,
)
from capmesh.services.runtime.gateway_channel import GatewayClient, gateway_metadata
from capmesh.services.runtime.settings import ServerSettings
from capmesh.services.runtime.status import read_details, status_of

# Opens one streaming call on the gateway channel with the service's gateway metadata.
StartCall = Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...]], Any]

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


class CapabilityClient(GatewayClient):
    """Streaming calls to another capability through the gateway, as the calling service needs them:
    refused when no gateway is set, failures as domain errors (`error_from_capability`), and the call
    ended whenever the caller stops (cancelling the caller's task cancels the call).

    `capability` names the other capability (LLM, TTS) in messages and reasons; `field` is the calling
    request's field that chose what the other service refused; `no_gateway` is the UNAVAILABLE message
    when no gateway is set."""

    def __init__(self, settings: ServerSettings, capability: str, field: str, no_gateway: str) -> None:
        super().__init__(settings)
        self._capability = capability
        self._field = field
        self._no_gateway = no_gateway

    @asynccontextmanager
    async def streaming(self, start: StartCall) -> AsyncIterator[Any]:
        """The call `start` opens, to read its messages from inside the block."""
        if not self._settings.gateway:
            raise Unavailable(self._no_gateway, reason="NO_GATEWAY")
        call = start(self._open(), gateway_metadata(self._settings))
        try:
            yield call
        except grpc.aio.AioRpcError as exc:
            raise error_from_capability(exc, self._capability, self._field) from exc
        finally:
            call.cancel()  # a no-op once the call ended; when the caller's task is cancelled it ends the call

    def ended_without_result(self) -> Unavailable:
        """The error for a stream that closed cleanly before its result message."""
        return Unavailable(
            f"the {self._capability} stream ended without a result",
            reason=f"{self._capability.upper()}_STREAM_BROKEN",
        )

"""The `Llm` the DocGen service writes with: `capmesh.llm.v1.LlmService.StreamChat` through the gateway.

Going through the gateway (not to an LLM server directly) is the point: the gateway routes each
section to a healthy LLM backend, where continuous batching serves the concurrent sections
together, and fails over when a backend dies. Failures come back as capmesh domain errors read from
the call's rich status, so the engine can tell a retryable one (UNAVAILABLE, RESOURCE_EXHAUSTED)
from the rest. Cancelling the task that awaits `complete` cancels the call (the `finally` below).
"""

from __future__ import annotations

import grpc

from capmesh.llm.v1 import llm_service_pb2 as llm_pb
from capmesh.llm.v1 import llm_service_pb2_grpc as llm_grpc
from capmesh.services.docgen.domain import LlmAnswer, Prompt
from capmesh.services.docgen.engine import OnText
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
from capmesh.services.runtime.gateway_channel import gateway_channel, gateway_metadata
from capmesh.services.runtime.settings import ServerSettings
from capmesh.services.runtime.status import read_details, status_of


def chat_request(prompt: Prompt) -> llm_pb.StreamChatRequest:
    request = llm_pb.StreamChatRequest(
        messages=[
            llm_pb.ChatMessage(role=llm_pb.ROLE_SYSTEM, content=prompt.system),
            llm_pb.ChatMessage(role=llm_pb.ROLE_USER, content=prompt.user),
        ],
        model=prompt.model,
        max_tokens=prompt.max_tokens,
        temperature=prompt.temperature,
    )
    if prompt.json_schema:
        request.response_format.CopyFrom(llm_pb.ResponseFormat(json_schema=prompt.json_schema))
    return request


def error_from_call(exc: grpc.aio.AioRpcError) -> CapmeshError:
    """The LLM call's failure as a domain error with the same code, its reason and retry delay kept."""
    details = read_details(status_of(exc))
    message = f"the LLM capability answered {exc.code().name}: {exc.details()}"
    code = exc.code()
    reason = details.reason or None
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(message, reason=reason or "LLM_UNAVAILABLE", retry_after_s=details.retry_after_s)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, reason=reason or "LLM_BUSY", retry_after_s=details.retry_after_s)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(message)
    if code == grpc.StatusCode.CANCELLED:
        return Cancelled(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # The LLM refused what this request chose (its model, most likely): the caller's mistake.
        violations = [FieldViolation(f, d) for f, d in details.field_violations] or [FieldViolation("model", message)]
        return InvalidArgument(violations, message=message, reason=reason)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message, reason=reason)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(message, reason=reason)
    return Internal(message, reason=reason or "LLM_FAILED")


class GatewayLlm:
    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None

    async def complete(self, prompt: Prompt, on_text: OnText, timeout_s: float | None) -> LlmAnswer:
        if not self._settings.gateway:
            raise Unavailable(
                "docgen reaches the LLM capability through a gateway, and none is set (--gateway)",
                reason="NO_GATEWAY",
            )
        if self._channel is None:
            self._channel = gateway_channel(self._settings)
        stub = llm_grpc.LlmServiceStub(self._channel)
        call = stub.StreamChat(chat_request(prompt), timeout=timeout_s, metadata=gateway_metadata(self._settings))
        try:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "chunk":
                    on_text(message.chunk.text)
                elif kind == "result":
                    result = message.result
                    return LlmAnswer(text=result.text, tokens=result.usage.completion_tokens, model=result.model)
        except grpc.aio.AioRpcError as exc:
            raise error_from_call(exc) from exc
        finally:
            call.cancel()  # a no-op once the call ended; when this task is cancelled it ends the call
        raise Unavailable("the LLM stream ended without a result", reason="LLM_STREAM_BROKEN")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

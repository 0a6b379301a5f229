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
from capmesh.services.runtime.capability_calls import error_from_capability
from capmesh.services.runtime.errors import Unavailable
from capmesh.services.runtime.gateway_channel import gateway_channel, gateway_metadata
from capmesh.services.runtime.settings import ServerSettings


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
            raise error_from_capability(exc, "LLM", "model") from exc
        finally:
            call.cancel()  # a no-op once the call ended; when this task is cancelled it ends the call
        raise Unavailable("the LLM stream ended without a result", reason="LLM_STREAM_BROKEN")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

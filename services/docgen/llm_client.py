"""The `Llm` the DocGen service writes with: `capmesh.llm.v1.LlmService.StreamChat` through the gateway.

Going through the gateway (not to an LLM server directly) is the point: the gateway routes each
section to a healthy LLM backend, where continuous batching serves the concurrent sections
together, and fails over when a backend dies. Failures come back as capmesh domain errors read from
the call's rich status, so the engine can tell a retryable one (UNAVAILABLE, RESOURCE_EXHAUSTED)
from the rest. Cancelling the task that awaits `complete` cancels the call (`CapabilityClient.streaming`).
"""

from __future__ import annotations

from typing import Any

import grpc

from capmesh.llm.v1 import llm_service_pb2 as llm_pb
from capmesh.llm.v1 import llm_service_pb2_grpc as llm_grpc
from capmesh.services.docgen.domain import LlmAnswer, Prompt
from capmesh.services.docgen.engine import OnText
from capmesh.services.runtime.capability_calls import CapabilityClient
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


class GatewayLlm(CapabilityClient):
    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(
            settings, "LLM", "model", "docgen reaches the LLM capability through a gateway, and none is set (--gateway)"
        )

    async def complete(self, prompt: Prompt, on_text: OnText, timeout_s: float | None) -> LlmAnswer:
        def start(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> Any:
            return llm_grpc.LlmServiceStub(channel).StreamChat(
                chat_request(prompt), timeout=timeout_s, metadata=metadata
            )

        async with self.streaming(start) as call:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "chunk":
                    on_text(message.chunk.text)
                elif kind == "result":
                    result = message.result
                    return LlmAnswer(text=result.text, tokens=result.usage.completion_tokens, model=result.model)
        raise self.ended_without_result()

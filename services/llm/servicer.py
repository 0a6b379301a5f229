"""The LlmService servicer: converts, runs the engine's stream, converts back.

Calls skip the runtime's worker threads (`Runtime.events`) on purpose: the transformers engine
already runs every request in its own scheduler thread, so a call here only awaits its stream. The
runtime's admission still bounds the calls in flight, and the engine's queue bounds the waiting
requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from capmesh.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from capmesh.services.llm import convert
from capmesh.services.llm.domain import ChatEvent, ChatRequest, ChatResult, Queued
from capmesh.services.llm.engine import LlmEngine
from capmesh.services.runtime.protoconv import model_info_to_proto
from capmesh.services.runtime.streaming import Runtime, token_for


class LlmServicer(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, engine: LlmEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def Chat(self, request, context):
        results = []
        async for event in self._answer(convert.chat_request_from_proto(request), context):
            if isinstance(event, ChatResult):
                results.append(event)
        return convert.chat_response_to_proto(results)

    async def StreamChat(self, request, context):
        async for event in self._answer(convert.chat_request_from_proto(request), context):
            if isinstance(event, ChatResult):
                yield convert.stream_result_to_proto(event)
            elif isinstance(event, Queued):
                yield convert.queued_to_proto(event)
            else:
                yield convert.delta_to_proto(event)

    async def ListModels(self, request, context):
        return llm_service_pb2.ListModelsResponse(
            models=[model_info_to_proto(status) for status in self.engine.models.status()]
        )

    async def _answer(self, request: ChatRequest, context) -> AsyncIterator[ChatEvent]:
        cancel = token_for(context)
        async with self.runtime.slot():
            async for event in self.engine.stream(request, cancel):
                if isinstance(event, ChatResult) and event.finish_reason == "cancelled":
                    cancel.raise_if_cancelled()  # CANCELLED or DEADLINE_EXCEEDED, as the caller caused
                yield event

"""A backend that tells what reached it: `python -m tests.security.recorder` serves the LLM contract
and answers Chat with the invocation metadata it received, as JSON in the message content, and with
`usage.total_tokens` = N for the prompt "tokens:N". Settings come from `CAPMESH_RECORDER_*` (and
`CAPMESH_MESH_SECRET`), so each test starts it as an operator would configure a service. It prints
`capmesh recorder listening on HOST:PORT` once it serves."""

from __future__ import annotations

import json

from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService, run
from capmesh.services.runtime.settings import ServerSettings, load_settings

LLM_SERVICE = llm.DESCRIPTOR.services_by_name["LlmService"].full_name


class RecorderServicer(llm_service_pb2_grpc.LlmServiceServicer):
    async def Chat(self, request, context):
        seen = [[key, value if isinstance(value, str) else value.hex()] for key, value in context.invocation_metadata()]
        prompt = request.messages[-1].content if request.messages else ""
        tokens = int(prompt.split(":")[1]) if prompt.startswith("tokens:") else 0
        return llm.ChatResponse(
            message=llm.ChatMessage(role=llm.ROLE_ASSISTANT, content=json.dumps(seen)),
            usage=llm.Usage(prompt_tokens=0, completion_tokens=tokens, total_tokens=tokens),
        )


def build(settings: ServerSettings) -> CapabilityService:
    return CapabilityService(
        "llm", settings, [(llm_service_pb2_grpc.add_LlmServiceServicer_to_server, RecorderServicer())], [LLM_SERVICE]
    )


if __name__ == "__main__":
    run(build(load_settings(ServerSettings, "RECORDER", {"port": 0, "log_level": "warning"})))

"""A one-slot test backend whose Chat runs under the backend's own admission (as every real
capability's generation does): for the capacity-across-gateways test and benchmark.

`CountingServicer` records the most calls it ever ran at once, how many it served and how many its
admission refused; `hold_s` is how long each call holds its slot.
"""

from __future__ import annotations

import asyncio

from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.errors import ResourceExhausted
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.settings import ServerSettings
from capmesh.services.runtime.streaming import Runtime
from tests.gateway.backends import LLM_SERVICE


class CountingServicer(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, name: str, runtime: Runtime, hold_s: float) -> None:
        self.name = name
        self.runtime = runtime
        self.hold_s = hold_s
        self.running = 0
        self.most_running = 0
        self.served = 0
        self.refused = 0

    async def Chat(self, request, context):
        try:
            async with self.runtime.slot():
                self.running += 1
                self.most_running = max(self.most_running, self.running)
                try:
                    await asyncio.sleep(self.hold_s)
                finally:
                    self.running -= 1
                self.served += 1
        except ResourceExhausted:  # the admission is full (slots and line); the caller gets RetryInfo
            self.refused += 1
            raise
        return llm.ChatResponse(message=llm.ChatMessage(role=llm.ROLE_ASSISTANT, content=self.name))


def one_slot_backend(name: str, gateway: str, hold_s: float) -> tuple[CapabilityService, CountingServicer]:
    """A backend with max_concurrency 1 and no line, registering with `gateway` (comma-separated)."""
    settings = ServerSettings(gateway=gateway, max_concurrency=1, max_queue=0, grace_period_s=0, log_level="warning")
    runtime = Runtime("echo", settings)
    servicer = CountingServicer(name, runtime, hold_s)
    service = CapabilityService(
        "echo",
        settings,
        [(llm_service_pb2_grpc.add_LlmServiceServicer_to_server, servicer)],
        [LLM_SERVICE],
        runtime=runtime,
    )
    return service, servicer

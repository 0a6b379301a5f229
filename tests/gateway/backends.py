"""A test-only capability for the gateway's tests and benchmark: it answers at once and says who it is.

It serves the LLM contract (any contract would do) with behaviour chosen by the prompt, so that
routing, failover and relaying can be observed from the client side:
- Chat "hello" answers with the backend's name as content; "crash" is a bug (INTERNAL); "invalid"
  is the caller's mistake (INVALID_ARGUMENT); "unavailable" is UNAVAILABLE; "sleep:S" sleeps S
  seconds; "trailers" adds trailing metadata; "details" fails with rich details.
- ListModels answers at once with no model (a call that takes no capacity slot);
- StreamChat "n:K" streams K deltas then a result; "slow:K" sleeps `step_s` before each delta;
  "fail-after:K" streams K deltas then fails with UNAVAILABLE.
- capmesh.testing.v1.UploadService/Upload (raw bytes, client streaming) answers "name:total bytes".
Each backend records when a call of it was cancelled, and how many calls it served.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.errors import (
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.settings import ServerSettings

LLM_SERVICE = llm.DESCRIPTOR.services_by_name["LlmService"].full_name
UPLOAD_SERVICE = "capmesh.testing.v1.UploadService"
UPLOAD_METHOD = f"/{UPLOAD_SERVICE}/Upload"
CHAT = f"/{LLM_SERVICE}/Chat"
STREAM_CHAT = f"/{LLM_SERVICE}/StreamChat"


def chat_request(prompt: str, model: str = "") -> llm.ChatRequest:
    return llm.ChatRequest(messages=[llm.ChatMessage(role=llm.ROLE_USER, content=prompt)], model=model)


def stream_request(prompt: str, model: str = "") -> llm.StreamChatRequest:
    return llm.StreamChatRequest(messages=[llm.ChatMessage(role=llm.ROLE_USER, content=prompt)], model=model)


class EchoServicer(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, name: str, step_s: float, models: ModelManager | None = None) -> None:
        self.name = name
        self.step_s = step_s
        self.models = models
        self.unavailable = False  # when set, every call fails with UNAVAILABLE (a sick backend)
        self.faulty = False  # when set, every call fails with INTERNAL (a broken backend)
        self.calls = 0
        self.cancelled_at: list[float] = []
        self.models_seen: list[str] = []
        self._delta = llm.StreamChatResponse(chunk=llm.TextDelta(text=name, completion_tokens=1))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled_at.append(time.monotonic())
            raise

    async def Chat(self, request, context):
        self.calls += 1
        self.models_seen.append(request.model)
        prompt = request.messages[-1].content if request.messages else ""
        if self.unavailable:
            raise Unavailable(f"backend {self.name} is sick", reason="TEST_SICK")
        if self.faulty:
            raise RuntimeError(f"backend {self.name} is broken")
        if self.models is not None:
            self.models.ensure_loaded(request.model)
        if prompt == "crash":
            raise RuntimeError("a bug in one request")
        if prompt == "invalid":
            raise InvalidArgument.single("messages[0].content", "must not be 'invalid'")
        if prompt == "unavailable":
            raise Unavailable("this backend cannot serve now", reason="TEST_UNAVAILABLE")
        if prompt == "details":
            raise ResourceExhausted("full for the test", retry_after_s=2.5, reason="TEST_FULL")
        if prompt.startswith("sleep:"):
            await self._sleep(float(prompt.split(":")[1]))
        if prompt == "trailers":
            context.set_trailing_metadata((("x-trailer", "t1"), ("x-trailer-bin", b"\x00\xff\x01")))
        return llm.ChatResponse(
            message=llm.ChatMessage(role=llm.ROLE_ASSISTANT, content=self.name), model=request.model or "default"
        )

    async def ListModels(self, request, context):
        return llm.ListModelsResponse()

    async def StreamChat(self, request, context):
        self.calls += 1
        prompt = request.messages[-1].content if request.messages else ""
        kind, _, count = prompt.partition(":")
        steps = int(count or 1)
        for _ in range(steps):
            if kind == "slow":
                await self._sleep(self.step_s)
            yield self._delta
        if kind == "fail-after":
            raise Unavailable("the backend failed mid-stream", reason="TEST_MID_STREAM")
        yield llm.StreamChatResponse(result=llm.ChatResult(text=self.name, model=request.model or "default"))


def _upload_handler(name: str, models: ModelManager | None) -> grpc.GenericRpcHandler:
    async def upload(requests, context):
        if models is not None:
            models.ensure_loaded("")
        total = 0
        async for piece in requests:
            total += len(piece)
        return f"{name}:{total}".encode()

    handlers = {"Upload": grpc.stream_unary_rpc_method_handler(upload)}
    return grpc.method_handlers_generic_handler(UPLOAD_SERVICE, handlers)


def instant_models(names: tuple[str, ...] = ("m",)) -> ModelManager:
    """A model manager whose models load at once (for model affinity and GPU-group tests)."""
    return ModelManager(lambda name: LoadedModel(handle=name, device="cpu"), list(names))


def build_echo_service(
    name: str,
    settings: ServerSettings | None = None,
    step_s: float = 0.02,
    *,
    capability: str = "echo",
    services: tuple[str, ...] = ("llm", "upload"),
    models: ModelManager | None = None,
) -> tuple[CapabilityService, EchoServicer]:
    servicer = EchoServicer(name, step_s, models)
    servicers, names = [], []
    if "llm" in services:
        servicers.append((llm_service_pb2_grpc.add_LlmServiceServicer_to_server, servicer))
        names.append(LLM_SERVICE)
    if "upload" in services:
        servicers.append(
            (lambda handler, server: server.add_generic_rpc_handlers([handler]), _upload_handler(name, models))
        )
        names.append(UPLOAD_SERVICE)
    service = CapabilityService(
        capability=capability,
        settings=settings or ServerSettings(max_concurrency=64, max_queue=64, grace_period_s=2),
        servicers=servicers,
        service_names=names,
        models=models,
        engine_name="echo",
    )
    return service, servicer

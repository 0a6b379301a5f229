"""The LLM service through a real in-process gRPC server on port 0, on the tiny checkpoint."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from capmesh.client import from_rpc_error
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.llm.main import build_service
from capmesh.services.runtime.server import create_server

# One server for the module: starting and stopping one per test costs more than the tests.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(llm_settings):
    service = build_service(replace(llm_settings, max_batch_size=8, max_waiting=4))
    running = await create_server(service)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    engine = service.servicers[0][1].engine
    yield llm_service_pb2_grpc.LlmServiceStub(channel), engine
    await channel.close()
    await running.shutdown(grace_s=0)


def chat(prompt: str, max_tokens: int = 24, *, stream: bool = False, **kwargs):
    cls = pb.StreamChatRequest if stream else pb.ChatRequest
    return cls(
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, content="You are tiny."),
            pb.ChatMessage(role=pb.ROLE_USER, content=prompt),
        ],
        temperature=0.0,
        max_tokens=max_tokens,
        **kwargs,
    )


async def stream_text(stub, request) -> tuple[str, list[pb.StreamChatResponse]]:
    messages = [m async for m in stub.StreamChat(request)]
    return "".join(m.chunk.text for m in messages if m.WhichOneof("event") == "chunk"), messages


async def test_streamed_deltas_join_to_the_unary_answer(served):
    stub, _ = served
    unary = await stub.Chat(chat("Grüße 🙂 日本", 40))
    text, messages = await stream_text(stub, chat("Grüße 🙂 日本", 40, stream=True))
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"chunk"}
    result = messages[-1].result
    assert text == result.text == unary.message.content
    assert unary.message.role == pb.ROLE_ASSISTANT
    assert unary.finish_reason == result.finish_reason == pb.FINISH_REASON_LENGTH
    assert unary.usage.completion_tokens == result.usage.completion_tokens == 40
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + 40
    assert unary.model == result.model == "tiny"
    counts = [m.chunk.completion_tokens for m in messages[:-1]]
    assert counts == sorted(counts) and counts[-1] <= 40


async def test_concurrent_streams_each_get_their_solo_answer(served):
    stub, _ = served
    requests = [chat(f"question {i} " + "more " * i, 10 + 3 * i, stream=True) for i in range(8)]
    solo = [await stream_text(stub, r) for r in requests]
    together = await asyncio.gather(*(stream_text(stub, r) for r in requests))
    assert [t for t, _ in together] == [t for t, _ in solo]


async def test_cancel_mid_stream_stops_the_engine_at_the_next_token(served):
    stub, engine = served
    before = engine.stats().tokens_generated
    call = stub.StreamChat(chat("a very long answer", 2000, stream=True))
    async for message in call:
        if message.WhichOneof("event") == "chunk":
            break
    call.cancel()
    assert await asyncio.to_thread(engine.wait_idle, 10.0)
    assert 0 < engine.stats().tokens_generated - before < 2000


async def test_deadline_ends_the_answer_with_deadline_exceeded(served):
    stub, engine = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat("a very long answer", 2000), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await asyncio.to_thread(engine.wait_idle, 10.0)


async def test_invalid_requests_are_invalid_argument_with_field_violations(served):
    stub, _ = served
    bad = pb.StreamChatRequest(
        messages=[
            pb.ChatMessage(role=pb.ROLE_USER, content="hi"),
            pb.ChatMessage(role=pb.ROLE_UNSPECIFIED, content=""),
        ],
        temperature=2.5,
        top_p=0.0,
        max_tokens=0,
        stop=["a", "b", "c", "d", "e"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamChat(bad)]
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.field_violations] == [
        "messages[1].role",
        "messages[1].content",
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest())
    assert from_rpc_error(caught.value).field_violations[0][0] == "messages"


async def test_unknown_model_is_not_found_listing_the_served_models(served):
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat("hi", model="gpt-5"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "tiny" in caught.value.details()


async def test_list_models_says_the_weights_are_random(served):
    stub, _ = served
    await stub.Chat(chat("load it", 2))
    reply = await stub.ListModels(pb.ListModelsRequest())
    [model] = reply.models
    assert model.name == "tiny" and model.random_weights and model.details["context_window"] == "2048"

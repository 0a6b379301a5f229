"""The OpenAI surface's gRPC fields through a real in-process server on port 0: tools, logprobs, n,
the `queued` progress of StreamChat, and the typed client's helpers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import grpc
import jsonschema
import pytest
import pytest_asyncio

from capmesh.client.llm import LlmClient, Message, tool
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.llm.main import build_service
from capmesh.services.runtime.server import create_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ARGS = {"type": "object", "properties": {"q": {"type": "string", "maxLength": 8}}, "required": ["q"]}
USER = [pb.ChatMessage(role=pb.ROLE_USER, content="search for me")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(llm_settings):
    # A batch of 2 rows: a third request waits, and the queued progress can be seen.
    running = await create_server(build_service(replace(llm_settings, max_batch_size=2, max_waiting=4)))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield llm_service_pb2_grpc.LlmServiceStub(channel), running.port
    await channel.close()
    await running.shutdown(grace_s=0)


async def test_chat_returns_every_choice_with_logprobs(served):
    stub, _ = served
    reply = await stub.Chat(
        pb.ChatRequest(messages=USER, max_tokens=5, temperature=0.7, seed=2, n=2, logprobs=True, top_logprobs=2)
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.message == reply.choices[0].message
    assert reply.usage.completion_tokens == sum(len(c.logprobs) for c in reply.choices)
    assert all(len(lp.top_logprobs) == 2 for c in reply.choices for lp in c.logprobs)


async def test_required_tool_call_over_grpc(served):
    stub, _ = served
    reply = await stub.Chat(
        pb.ChatRequest(
            messages=USER,
            max_tokens=300,
            temperature=0,
            tools=[pb.Tool(name="search", parameters=json.dumps(ARGS))],
            tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
            parallel_tool_calls=False,
        )
    )
    assert reply.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    [call] = reply.message.tool_calls
    assert call.name == "search"
    jsonschema.validate(json.loads(call.arguments), ARGS)
    # The call goes back into the conversation with its result.
    history = [
        *USER,
        pb.ChatMessage(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
        pb.ChatMessage(role=pb.ROLE_TOOL, content='{"hits": 3}', tool_call_id=call.id),
    ]
    follow = await stub.Chat(pb.ChatRequest(messages=history, max_tokens=4, temperature=0))
    alone = await stub.Chat(pb.ChatRequest(messages=USER, max_tokens=1, temperature=0))
    assert follow.usage.prompt_tokens > alone.usage.prompt_tokens


async def test_a_stream_waiting_for_a_slot_reports_queued_with_its_position(served):
    stub, _ = served
    long = pb.StreamChatRequest(messages=USER, max_tokens=400, temperature=0)
    running = [stub.StreamChat(long) for _ in range(2)]
    for call in running:
        assert (await call.read()).WhichOneof("event") == "chunk"  # both rows of the batch are busy
    waiting = stub.StreamChat(pb.StreamChatRequest(messages=USER, max_tokens=2, temperature=0))
    first = await waiting.read()
    assert first.WhichOneof("event") == "progress"
    assert first.progress.stage == "queued" and first.progress.queue_position == 0
    for call in running:
        call.cancel()
    kinds = []
    while (message := await waiting.read()) is not grpc.aio.EOF:
        kinds.append(message.WhichOneof("event"))
    assert kinds[-1] == "result" and "chunk" in kinds


async def test_the_typed_client_sends_tools_and_sampling_controls(served):
    _, port = served

    def call() -> tuple:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            llm = LlmClient(channel)
            calls = llm.chat(
                [Message("user", "find it")], tools=[tool("search", ARGS)], tool_choice="search",
                max_tokens=200, temperature=0,
            )  # fmt: skip
            plain = llm.chat([Message("user", "find it")], max_tokens=30, temperature=0)
            penalised = llm.chat(
                [Message("user", "find it")], max_tokens=30, temperature=0, frequency_penalty=2.0, logprobs=True
            )
            return calls, plain, penalised

    calls, plain, penalised = await asyncio.to_thread(call)
    assert calls.finish_reason == "tool_calls" and calls.tool_calls[0].name == "search"
    jsonschema.validate(json.loads(calls.tool_calls[0].arguments), ARGS)
    assert penalised.text != plain.text
    assert len(penalised.logprobs) == penalised.completion_tokens

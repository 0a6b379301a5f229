"""Structured output through the APIs: LlmService's `response_format` over gRPC, and the gateway's
OpenAI-compatible route driven by the official `openai` package."""

from __future__ import annotations

import json
from dataclasses import replace

import grpc
import jsonschema
import openai
import pytest
import pytest_asyncio

from capmesh.client import from_rpc_error
from capmesh.client.llm import json_schema
from capmesh.gateway.server.config import GatewaySettings
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.llm.main import build_service
from capmesh.services.runtime.server import create_server
from tests.http.support import BackgroundLoop, start_mesh
from tests.llm.test_structured import MAX_TOKENS, OUTLINE_SCHEMA


def chat(cls, fmt: pb.ResponseFormat, max_tokens: int = MAX_TOKENS):
    return cls(
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content="An outline about rivers")],
        temperature=0.0,
        max_tokens=max_tokens,
        response_format=fmt,
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(llm_settings):
    running = await create_server(build_service(replace(llm_settings, max_batch_size=4, max_waiting=4)))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield llm_service_pb2_grpc.LlmServiceStub(channel)
    await channel.close()
    await running.shutdown(grace_s=0)


@pytest.mark.asyncio(loop_scope="module")
async def test_grpc_stream_and_unary_answers_validate_against_the_schema(stub):
    messages = [m async for m in stub.StreamChat(chat(pb.StreamChatRequest, json_schema(OUTLINE_SCHEMA)))]
    result = messages[-1].result
    assert result.finish_reason == pb.FINISH_REASON_STOP
    assert "".join(m.chunk.text for m in messages[:-1]) == result.text
    jsonschema.validate(json.loads(result.text), OUTLINE_SCHEMA)
    unary = await stub.Chat(chat(pb.ChatRequest, json_schema(OUTLINE_SCHEMA)))
    assert unary.message.content == result.text  # greedy: the same answer either way


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("fmt", "field"),
    [
        (pb.ResponseFormat(json_schema='{"type": "nonsense"}'), "response_format.json_schema"),
        (pb.ResponseFormat(regex="(unclosed"), "response_format.regex"),
        (pb.ResponseFormat(grammar="root ::= undefined_rule"), "response_format.grammar"),
    ],
)
async def test_grpc_a_format_that_cannot_compile_is_invalid_argument_before_any_message(stub, fmt, field):
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stub.StreamChat(chat(pb.StreamChatRequest, fmt)):
            received.append(message)
    assert received == []
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.field_violations] == [field]


# -- the OpenAI-compatible route -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdk(tmp_path_factory):
    loop = BackgroundLoop()
    settings = GatewaySettings(
        port=0,
        http_port=0,
        host="127.0.0.1",
        files_dir=str(tmp_path_factory.mktemp("files")),
        grace_period_s=0,
        log_level="warning",
    )
    mesh = loop.run(start_mesh(settings, capabilities=("llm",)))
    try:
        with openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
            yield client
    finally:
        loop.run(mesh.stop())
        loop.close()


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "outline", "schema": schema, "strict": True}}


def create(sdk, max_tokens: int = MAX_TOKENS, **kwargs):
    return sdk.chat.completions.create(
        model="", temperature=0, max_tokens=max_tokens, messages=[{"role": "user", "content": "An outline"}], **kwargs
    )


def test_openai_sdk_json_schema_answers_validate(sdk):
    completion = create(sdk, response_format=json_schema_format(OUTLINE_SCHEMA))
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), OUTLINE_SCHEMA)


def test_openai_sdk_json_schema_stream_validates(sdk):
    chunks = list(create(sdk, response_format=json_schema_format(OUTLINE_SCHEMA), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    jsonschema.validate(json.loads(text), OUTLINE_SCHEMA)


def test_openai_sdk_json_object_and_text(sdk):
    answer = create(sdk, response_format={"type": "json_object"}, max_tokens=200).choices[0]
    assert answer.message.content.startswith("{")
    if answer.finish_reason == "stop":
        assert isinstance(json.loads(answer.message.content), dict)
    plain = create(sdk, response_format={"type": "text"}, max_tokens=5).choices[0]
    assert plain.message.content == create(sdk, max_tokens=5).choices[0].message.content


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema"),
        (json_schema_format({"type": "nonsense"}), "response_format.json_schema"),
    ],
)
def test_openai_sdk_bad_response_format_is_400_naming_the_field(sdk, response_format, param):
    with pytest.raises(openai.BadRequestError) as caught:
        create(sdk, response_format=response_format)
    assert caught.value.body["param"] == param

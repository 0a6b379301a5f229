"""DocGenService through a real in-process gRPC server on port 0: with a fake `Llm`, and with the
real gRPC `GatewayLlm` against a fake LlmService (errors, cancellation, response_format)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from capmesh.client import from_rpc_error
from capmesh.common.v1 import artifact_pb2
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.docgen.v1 import docgen_service_pb2_grpc
from capmesh.llm.v1 import llm_service_pb2 as llm_pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.docgen.config import DocgenSettings
from capmesh.services.docgen.engine import Llm
from capmesh.services.docgen.llm_client import GatewayLlm
from capmesh.services.docgen.main import build_service
from capmesh.services.runtime.server import create_server
from tests.docgen.fakes import OUTLINE, FakeLlm

SETTINGS = DocgenSettings(retry_backoff_s=0.0, log_json=False)
OUTLINE_PB = pb.Outline(title="Plan", nodes=[pb.OutlineNode(title=f"Part {n}", summary="s") for n in range(1, 5)])


async def serve(llm: Llm, settings: DocgenSettings = SETTINGS):
    running = await create_server(build_service(settings, llm))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return running, channel, docgen_service_pb2_grpc.DocGenServiceStub(channel)


@pytest.fixture
async def served():
    llm = FakeLlm(pieces=2)
    running, channel, stub = await serve(llm)
    yield stub, llm
    await channel.close()
    await running.shutdown(grace_s=0)


async def test_outline_stream(served):
    stub, _ = served
    messages = [m async for m in stub.StreamGenerateOutline(pb.StreamGenerateOutlineRequest(query="a guide"))]
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    assert messages[0].progress.stage == "analyzing"
    outline = messages[-1].result.outline
    assert outline.title == OUTLINE["title"] and len(outline.nodes) >= 2
    assert outline.nodes[0].children[0].title == "Sub 1"


async def test_document_stream_has_a_step_per_section_text_chunks_and_the_file(served):
    stub, _ = served
    request = pb.StreamGenerateDocumentRequest(
        outline=OUTLINE_PB,
        context_files=[artifact_pb2.Artifact(inline_data=b"facts", name="facts.txt")],
        max_concurrent_sections=2,
    )
    messages = [m async for m in stub.StreamGenerateDocument(request)]
    assert messages[-1].WhichOneof("event") == "result"
    result = messages[-1].result
    steps = [m.progress.step for m in messages if m.HasField("progress") and m.progress.stage == "writing"]
    assert steps == [0, 1, 2, 3, 4]
    chunks = [m.chunk for m in messages if m.HasField("chunk")]
    assert {c.index for c in chunks} == {0, 1, 2, 3, 4}
    document = b"".join(c.data for c in chunks if c.index == 0)
    assert result.document.size_bytes == len(document)
    assert result.document.sha256 == hashlib.sha256(document).hexdigest()
    assert result.document.mime_type == "text/markdown" and not result.document.HasField("inline_data")
    text = document.decode()
    assert all(f"## Part {n}\n" in text for n in range(1, 5))
    assert [s.index for s in result.sections] == [1, 2, 3, 4]
    assert [(r.name, list(r.sections)) for r in result.references] == [("facts.txt", [1, 2, 3, 4])]
    assert result.format == pb.DOCUMENT_FORMAT_MARKDOWN


async def test_bad_requests_name_their_fields(served):
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StreamGenerateDocument(
            pb.StreamGenerateDocumentRequest(
                outline=pb.Outline(title="", nodes=[pb.OutlineNode(title="x")]),
                context_files=[artifact_pb2.Artifact(inline_data=b"\xff\xfe")],
            )
        ).read()
    error = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in error.field_violations} == {"context_files[0]"}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StreamGenerateDocument(pb.StreamGenerateDocumentRequest(outline=pb.Outline(title="t"))).read()
    assert {f for f, _ in from_rpc_error(caught.value).field_violations} == {"outline.nodes"}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StreamGenerateOutline(pb.StreamGenerateOutlineRequest(query="")).read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- GatewayLlm against a fake LlmService -----------------------------------------------------


@dataclass
class FakeLlmService(llm_service_pb2_grpc.LlmServiceServicer):
    """Streams a fixed answer slowly, or fails with `fail_with`; records requests and cancellations."""

    fail_with: grpc.StatusCode | None = None
    delay_s: float = 0.0
    requests: list[llm_pb.StreamChatRequest] = field(default_factory=list)
    cancelled: int = 0

    async def StreamChat(self, request, context) -> AsyncIterator[llm_pb.StreamChatResponse]:
        self.requests.append(request)
        if self.fail_with is not None:
            await context.abort(self.fail_with, "no LLM backend")
        try:
            answer = json.dumps(OUTLINE) if request.response_format.json_schema else "Some text. More text."
            for piece in (answer[: len(answer) // 2], answer[len(answer) // 2 :]):
                await asyncio.sleep(self.delay_s)
                yield llm_pb.StreamChatResponse(chunk=llm_pb.TextDelta(text=piece))
            yield llm_pb.StreamChatResponse(
                result=llm_pb.ChatResult(text=answer, model="fake-llm", usage=llm_pb.Usage(completion_tokens=7))
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def fake_llm_server(fake: FakeLlmService) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    llm_service_pb2_grpc.add_LlmServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def through_grpc():
    fake = FakeLlmService()
    llm_server, address = await fake_llm_server(fake)
    # The docgen server itself registers with no gateway; only its LLM client dials the fake.
    llm = GatewayLlm(DocgenSettings(gateway=address, log_json=False))
    running, channel, stub = await serve(llm, DocgenSettings(retry_backoff_s=0.0, section_retries=1, log_json=False))
    yield stub, fake
    await channel.close()
    await running.shutdown(grace_s=0)
    await llm_server.stop(0)


async def test_outline_asks_the_llm_for_json_matching_the_schema(through_grpc):
    stub, fake = through_grpc
    messages = [m async for m in stub.StreamGenerateOutline(pb.StreamGenerateOutlineRequest(query="q", max_sections=3))]
    assert messages[-1].result.model == "fake-llm" and len(messages[-1].result.outline.nodes) == 3
    schema = json.loads(fake.requests[0].response_format.json_schema)
    assert schema["properties"]["nodes"]["maxItems"] == 3
    assert [m.role for m in fake.requests[0].messages] == [llm_pb.ROLE_SYSTEM, llm_pb.ROLE_USER]


async def test_document_through_the_llm_service(through_grpc):
    stub, fake = through_grpc
    messages = [m async for m in stub.StreamGenerateDocument(pb.StreamGenerateDocumentRequest(outline=OUTLINE_PB))]
    result = messages[-1].result
    assert [s.tokens for s in result.sections] == [7] * 4 and result.model == "fake-llm"
    assert all(not r.HasField("response_format") for r in fake.requests)


async def test_an_unavailable_llm_fails_the_document_with_unavailable(through_grpc):
    stub, fake = through_grpc
    fake.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamGenerateDocument(
            pb.StreamGenerateDocumentRequest(outline=OUTLINE_PB, max_concurrent_sections=1)
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert from_rpc_error(caught.value).reason == "LLM_UNAVAILABLE"
    assert len(fake.requests) == 2  # the first section, tried twice (section_retries=1)


async def test_cancelling_the_document_cancels_its_llm_calls(through_grpc):
    stub, fake = through_grpc
    fake.delay_s = 30.0
    call = stub.StreamGenerateDocument(pb.StreamGenerateDocumentRequest(outline=OUTLINE_PB, max_concurrent_sections=3))
    first = await call.read()
    assert first.progress.stage == "writing"
    while len(fake.requests) < 3:
        await asyncio.sleep(0.01)
    call.cancel()
    for _ in range(500):
        if fake.cancelled == 3:
            break
        await asyncio.sleep(0.01)
    assert fake.cancelled == 3 and len(fake.requests) == 3


async def test_the_callers_deadline_reaches_the_llm_calls(through_grpc):
    stub, fake = through_grpc
    fake.delay_s = 30.0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamGenerateDocument(pb.StreamGenerateDocumentRequest(outline=OUTLINE_PB), timeout=0.5):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(500):
        if fake.cancelled == len(fake.requests):
            break
        await asyncio.sleep(0.01)
    assert fake.requests and fake.cancelled == len(fake.requests)

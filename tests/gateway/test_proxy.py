"""The transparent proxy: what a client sees through the gateway is what it sees directly."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from capmesh.client import from_rpc_error
from capmesh.gateway.server import metrics
from capmesh.gateway.server.routing.proxy import Proxy
from capmesh.gateway.server.routing.services import MethodInfo
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.gateway.backends import (
    CHAT,
    UPLOAD_METHOD,
    UPLOAD_SERVICE,
    chat_request,
    stream_request,
)
from tests.gateway.conftest import wait_available
from tests.runtime.stepper import build_stepper_service


@pytest.fixture
async def mesh(gateways, backends, channel_to):
    """A gateway with one echo backend; channels to both."""
    gateway = await gateways()
    backend, servicer = await backends("A", gateway.grpc_address)
    via_gateway = channel_to(gateway.grpc_address)
    direct = channel_to(f"127.0.0.1:{backend.port}")
    await wait_available(via_gateway, 1)
    return gateway, servicer, via_gateway, direct


async def _outcome(call):
    """Everything a client can observe of a finished unary call."""
    try:
        response = await call
        error = None
    except grpc.aio.AioRpcError as exc:
        response, error = None, exc
    return {
        "response": response,
        "code": await call.code(),
        "details": await call.details(),
        "initial": tuple(await call.initial_metadata()),
        "trailing": tuple(await call.trailing_metadata()),
        "error": from_rpc_error(error).__dict__ if error is not None else None,
    }


@pytest.mark.parametrize("prompt", ["trailers", "details", "invalid", "crash"])
async def test_unary_metadata_trailers_status_and_details_are_relayed_exactly(mesh, prompt):
    _, _, via_gateway, direct = mesh
    metadata = (("x-request-id", "req-42"), ("x-custom-bin", b"\x00\x01\x02"))
    outcomes = []
    for channel in (direct, via_gateway):
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        outcomes.append(await _outcome(stub.Chat(chat_request(prompt), metadata=metadata)))
    assert outcomes[0] == outcomes[1]
    assert dict(outcomes[1]["trailing"])["x-request-id"] == "req-42"
    assert outcomes[1]["initial"] == ()  # the backend sent none, so the proxy sent none either
    if prompt == "trailers":
        assert dict(outcomes[1]["trailing"])["x-trailer-bin"] == b"\x00\xff\x01"
    if prompt == "details":
        assert outcomes[1]["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert outcomes[1]["error"]["retry_after_s"] == 2.5
    if prompt == "invalid":
        assert outcomes[1]["error"]["field_violations"] == [("messages[0].content", "must not be 'invalid'")]


async def test_server_streaming_relays_messages_and_a_mid_stream_failure(mesh):
    _, servicer, via_gateway, direct = mesh
    results = []
    for channel in (direct, via_gateway):
        call = llm_service_pb2_grpc.LlmServiceStub(channel).StreamChat(
            stream_request("fail-after:3"), metadata=(("x-request-id", "stream-1"),)
        )
        messages = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in call:
                messages.append(message)
        results.append(
            (
                messages,
                caught.value.code(),
                caught.value.details(),
                tuple(caught.value.trailing_metadata()),
                dict(caught.value.trailing_metadata())["x-request-id"],
            )
        )
    assert results[0] == results[1]
    assert len(results[1][0]) == 3 and results[1][1] == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 2  # once direct, once through the gateway: never retried after output


async def test_client_streaming_reaches_the_backend_through_the_proxy(mesh):
    _, _, via_gateway, _ = mesh

    async def pieces():
        for size in (10, 20, 30):
            yield b"x" * size

    assert await via_gateway.stream_unary(UPLOAD_METHOD)(pieces()) == b"A:60"


async def test_a_client_streaming_contract_method_is_relayed_with_its_own_handler_shape(mesh, channel_to):
    # The capability contracts have no client-streaming method yet; serve the proxy's handler for
    # one (as the gateway would for such a contract method) on a server of its own.
    gateway, _, _, _ = mesh
    info = MethodInfo(UPLOAD_METHOD, UPLOAD_SERVICE, client_streaming=True, server_streaming=False)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(UPLOAD_SERVICE, {"Upload": Proxy(gateway.gateway.router).handler(info)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:

        async def pieces():
            yield b"abcd"

        call = channel_to(f"127.0.0.1:{port}").stream_unary(UPLOAD_METHOD)(
            pieces(), metadata=(("x-request-id", "up-1"),)
        )
        assert await call == b"A:4"
        assert dict(await call.trailing_metadata())["x-request-id"] == "up-1"
    finally:
        await server.stop(0)


async def test_reflection_lists_every_capability_service(mesh):
    _gateway, _, via_gateway, _ = mesh
    stub = reflection_pb2_grpc.ServerReflectionStub(via_gateway)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name async for answer in answers for s in answer.list_services_response.service}
    assert {
        "capmesh.tts.v1.TtsService",
        "capmesh.llm.v1.LlmService",
        "capmesh.videogen.v1.VideoGenService",
        "capmesh.imagegen.v1.ImageGenService",
        "capmesh.talkinghead.v1.TalkingHeadService",
        "capmesh.gateway.v1.RegistryService",
        "grpc.health.v1.Health",
    } <= names


async def test_a_capability_without_backends_is_unavailable_naming_it(gateways, channel_to):
    gateway = await gateways()
    stub = tts_service_pb2_grpc.TtsServiceStub(channel_to(gateway.grpc_address))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="hi"))]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'tts'" in caught.value.details() and "no backend registered" in caught.value.details()
    assert from_rpc_error(caught.value).reason == "NO_BACKEND"


@pytest.fixture
async def stepper_mesh(gateways, channel_to):
    gateway = await gateways()
    service, engine = build_stepper_service(
        ServerSettings(gateway=gateway.grpc_address, max_concurrency=2, max_queue=1, grace_period_s=0), step_s=0.02
    )
    running = await create_server(service)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    yield engine, tts_service_pb2_grpc.TtsServiceStub(channel)
    await running.shutdown(grace_s=0)


async def _stopped_at(engine) -> float:
    await asyncio.get_running_loop().run_in_executor(None, engine.stopped.wait, 2.0)
    return time.monotonic()


async def test_client_deadline_is_deadline_exceeded_and_the_backend_sees_the_cancellation(stepper_mesh):
    engine, stub = stepper_mesh
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="steps:200"), timeout=0.3)]
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stopped = await _stopped_at(engine)
    assert engine.steps_run < 200
    assert stopped - (started + 0.3) < 0.2


async def test_a_client_cancel_cancels_the_backend_call(stepper_mesh):
    engine, stub = stepper_mesh
    call = stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="steps:200"))
    await call.read()
    cancelled = time.monotonic()
    call.cancel()
    stopped = await _stopped_at(engine)
    assert engine.steps_run < 200
    assert stopped - cancelled < 0.2


async def test_proxied_calls_are_counted_in_the_metrics(mesh):
    _, _, via_gateway, _ = mesh
    labels = {"method": CHAT, "code": "OK"}
    before = metrics.REGISTRY.get_sample_value("capmesh_rpc_requests_total", labels) or 0
    stub = llm_service_pb2_grpc.LlmServiceStub(via_gateway)
    for _ in range(3):
        await stub.Chat(chat_request("hello"))
    assert metrics.REGISTRY.get_sample_value("capmesh_rpc_requests_total", labels) == before + 3
    assert metrics.REGISTRY.get_sample_value("capmesh_rpc_seconds_count", {"method": CHAT}) >= 3
    assert metrics.REGISTRY.get_sample_value("capmesh_proxied_bytes_total", {"direction": "response"}) > 0
    assert metrics.REGISTRY.get_sample_value("capmesh_rpc_in_flight", {"capability": "echo"}) == 0
    [backend_id] = mesh[0].gateway.registry.entries
    assert (
        metrics.REGISTRY.get_sample_value(
            "capmesh_backend_state", {"capability": "echo", "backend": backend_id, "state": "AVAILABLE"}
        )
        == 1
    )

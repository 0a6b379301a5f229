"""The shared runtime through a real in-process grpc.aio server on port 0."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.client import from_rpc_error
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.runtime.stepper import build_stepper_service


@pytest.fixture
async def stepper():
    service, engine = build_stepper_service()
    running = await create_server(service)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, engine, channel
    await channel.close()
    await running.shutdown(grace_s=0)


def request(text: str) -> tts_service_pb2.StreamSynthesizeRequest:
    return tts_service_pb2.StreamSynthesizeRequest(text=text)


async def test_stream_sends_progress_chunks_then_exactly_one_result(stepper):
    _running, _engine, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    kinds = [m.WhichOneof("event") async for m in stub.StreamSynthesize(request("steps:3"))]
    assert kinds == ["progress", "chunk"] * 3 + ["result"]


async def test_request_id_is_echoed_in_the_trailers_and_generated_when_absent(stepper):
    _, _, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    call = stub.StreamSynthesize(request("steps:1"), metadata=(("x-request-id", "req-123"),))
    [m async for m in call]
    assert dict(await call.trailing_metadata())["x-request-id"] == "req-123"
    assert tuple(await call.initial_metadata()) == ()  # no initial-metadata operation of its own
    call = stub.StreamSynthesize(request("steps:1"))
    [m async for m in call]
    assert len(dict(await call.trailing_metadata())["x-request-id"]) == 32
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a failed call carries it too
        [m async for m in stub.StreamSynthesize(request(""), metadata=(("x-request-id", "req-bad"),))]
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "req-bad"


async def test_invalid_request_gives_field_violations_with_error_info(stepper):
    _, _, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(request(""))]
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == [("text", "must not be empty")]
    assert (error.reason, error.domain) == ("INVALID_ARGUMENT", "capmesh.dev")


async def test_refusal_is_failed_precondition_with_reason(stepper):
    _, _, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(request("refuse"))]
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REFUSED_FOR_TEST")


async def test_a_crash_is_internal_and_the_server_keeps_serving(stepper):
    _, _, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(request("crash"))]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "request id" in caught.value.details()
    assert len([m async for m in stub.StreamSynthesize(request("steps:1"))]) == 3


async def test_cancel_reaches_the_engine_at_the_next_step(stepper):
    _, engine, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    call = stub.StreamSynthesize(request("steps:1000"))
    async for message in call:
        if message.WhichOneof("event") == "chunk":
            break
    call.cancel()
    assert await asyncio.to_thread(engine.stopped.wait, 2.0)
    assert engine.steps_run < 20


async def test_deadline_reaches_the_engine(stepper):
    _, engine, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamSynthesize(request("steps:1000"), timeout=0.2)]
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await asyncio.to_thread(engine.stopped.wait, 2.0)
    assert engine.steps_run < 30


async def test_full_queue_is_resource_exhausted_with_retry_info(stepper):
    _, _, channel = stepper
    stub = tts_service_pb2_grpc.TtsServiceStub(channel)
    calls = [stub.StreamSynthesize(request("steps:50")) for _ in range(3)]  # 2 run, 1 waits
    for call in calls:
        await call.initial_metadata()
    await asyncio.sleep(0)  # let the server admit them before the one that overflows
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamSynthesize(request("steps:1")):
            pass
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after_s and error.retry_after_s > 0
    for call in calls:
        call.cancel()


async def test_health_reflection_and_admin(stepper):
    running, _, channel = stepper
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", "capmesh.tts.v1.TtsService"]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    status = await admin.GetServiceStatus(admin_service_pb2.GetServiceStatusRequest())
    assert status.capability == "stepper" and status.max_concurrency == 2
    await running.set_serving(False)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="capmesh.tts.v1.TtsService"))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_settings_reject_bad_values_naming_them():
    from capmesh.services.runtime.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="CAPMESH_X_PORT='abc'"):
        load_settings(ServerSettings, "x", environ={"CAPMESH_X_PORT": "abc"})
    with pytest.raises(SettingsError, match="max_concurrency=0"):
        load_settings(ServerSettings, "x", environ={"CAPMESH_X_MAX_CONCURRENCY": "0"})
    settings = load_settings(ServerSettings, "x", {"port": "5"}, environ={"CAPMESH_X_RESIDENCY": "idle"})
    assert settings.port == 5 and settings.residency.value == "idle"

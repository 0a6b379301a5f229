"""The registry: self-registration, heartbeats, leases, the views, and Redis shared by gateways."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from capmesh.client import from_rpc_error
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.registration import CALL_TIMEOUT_S
from tests.gateway.backends import chat_request, stream_request
from tests.gateway.conftest import (
    backend_states,
    registry_stub,
    wait_available,
    wait_for,
)


async def test_a_service_registers_itself_and_deregisters_on_graceful_shutdown(gateways, backends, channel_to):
    gateway = await gateways()
    backend, _ = await backends("A", gateway.grpc_address, max_concurrency=3, device_group="gpu7")
    channel = channel_to(gateway.grpc_address)
    [status] = (await wait_available(channel, 1)).values()
    record = status.backend
    assert (record.address, record.capability) == (f"127.0.0.1:{backend.port}", "echo")
    assert list(record.services) == ["capmesh.llm.v1.LlmService", "capmesh.testing.v1.UploadService"]
    assert (record.max_concurrency, record.device_group, record.device) == (3, "gpu7", "cpu")
    assert record.version and status.source == "registered"

    capability = (await registry_stub(channel).GetCapability(pb.GetCapabilityRequest(capability="echo"))).capability
    assert capability.state == pb.BACKEND_STATE_AVAILABLE and len(capability.backends) == 1

    await backend.shutdown(grace_s=0)
    assert await backend_states(channel) == {}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry_stub(channel).GetCapability(pb.GetCapabilityRequest(capability="echo"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_backend_without_heartbeats_is_dropped_when_its_lease_ends(gateways, channel_to):
    gateway = await gateways(heartbeat_interval_s=0.1, lease_s=0.4)
    stub = registry_stub(channel_to(gateway.grpc_address))
    answer = await stub.Register(pb.RegisterRequest(backend=pb.Backend(address="127.0.0.1:1", capability="tts")))
    assert answer.backend_id == "tts-127.0.0.1-1" and answer.lease_seconds == 0.4
    assert (await stub.Heartbeat(pb.HeartbeatRequest(backend_id=answer.backend_id))).known

    async def gone():
        return not (await stub.ListCapabilities(pb.ListCapabilitiesRequest())).capabilities

    await wait_for(gone, what="the lease to end")
    assert not (await stub.Heartbeat(pb.HeartbeatRequest(backend_id=answer.backend_id))).known


async def test_a_forgotten_backend_registers_again_at_its_next_heartbeat(gateways, backends, channel_to):
    gateway = await gateways()
    await backends("A", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    [backend_id] = await wait_available(channel, 1)
    await registry_stub(channel).Deregister(pb.DeregisterRequest(backend_id=backend_id))  # as after a restart
    assert await backend_states(channel) == {}
    assert list(await wait_available(channel, 1)) == [backend_id]


async def test_registration_with_mistakes_names_each_field(gateways, channel_to):
    gateway = await gateways()
    stub = registry_stub(channel_to(gateway.grpc_address))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(pb.RegisterRequest(backend=pb.Backend(services=["grpc.health.v1.Health"])))
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in error.field_violations] == [
        "backend.address",
        "backend.capability",
        "backend.services[0]",
    ]


async def test_watch_sends_the_view_then_every_change(gateways, backends, channel_to):
    gateway = await gateways()
    channel = channel_to(gateway.grpc_address)
    watch = registry_stub(channel).WatchCapabilities(pb.WatchCapabilitiesRequest())
    assert list((await watch.read()).capabilities) == []
    await backends("A", gateway.grpc_address)

    async def until_available():
        while True:
            view = await watch.read()
            if view.capabilities and view.capabilities[0].state == pb.BACKEND_STATE_AVAILABLE:
                return view

    view = await asyncio.wait_for(until_available(), 5)
    assert view.capabilities[0].capability == "echo"
    watch.cancel()


async def test_a_second_gateway_on_the_same_redis_sees_the_same_registry(gateways, backends, channel_to, redis_server):
    redis_server.flush()
    first = await gateways(redis_url=redis_server.url)
    second = await gateways(redis_url=redis_server.url)
    backend, _ = await backends("A", first.grpc_address)
    first_channel, second_channel = channel_to(first.grpc_address), channel_to(second.grpc_address)
    seen_by_first = await wait_available(first_channel, 1)
    seen_by_second = await wait_available(second_channel, 1)
    assert list(seen_by_first) == list(seen_by_second) == [f"echo-127.0.0.1-{backend.port}"]
    assert (
        seen_by_second[f"echo-127.0.0.1-{backend.port}"].backend
        == seen_by_first[f"echo-127.0.0.1-{backend.port}"].backend
    )
    answer = await llm_service_pb2_grpc.LlmServiceStub(second_channel).Chat(chat_request("hello"))
    assert answer.message.content == "A"

    third = await gateways(redis_url=redis_server.url)  # a gateway started later loads what is there
    await wait_available(channel_to(third.grpc_address), 1)

    await backend.shutdown(grace_s=0)  # deregisters at the first gateway; the others hear of it

    async def forgotten():
        return await backend_states(second_channel) == {}

    await wait_for(forgotten, what="the second gateway to forget the backend")


async def test_a_stream_in_flight_finishes_when_its_backend_shuts_down_gracefully(gateways, backends, channel_to):
    gateway = await gateways()
    backend, _ = await backends("A", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    call = llm_service_pb2_grpc.LlmServiceStub(channel).StreamChat(stream_request("slow:15"))
    first = await call.read()
    shutdown = asyncio.ensure_future(backend.shutdown(grace_s=5))  # deregisters first, then drains
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    await shutdown
    assert first.chunk.text == "A" and len(rest) == 15 and rest[-1].HasField("result")
    assert await backend_states(channel) == {}


async def test_in_redis_a_silent_backend_expires_for_every_gateway(gateways, channel_to, redis_server):
    redis_server.flush()
    settings = {"redis_url": redis_server.url, "heartbeat_interval_s": 0.1, "lease_s": 0.4}
    first, second = await gateways(**settings), await gateways(**settings)
    stub = registry_stub(channel_to(first.grpc_address))
    await stub.Register(pb.RegisterRequest(backend=pb.Backend(address="127.0.0.1:1", capability="tts")))
    other = channel_to(second.grpc_address)
    await wait_for(lambda: backend_states(other), what="the second gateway to learn of the backend")

    async def gone_everywhere():
        return await backend_states(other) == {} and not first.gateway.registry.entries

    await wait_for(gone_everywhere, what="the lease to end in Redis")


class _SilentHeartbeats(registry_service_pb2_grpc.RegistryServiceServicer):
    """A gateway that registers backends but never answers a heartbeat (stuck, or cut off mid-call)."""

    def __init__(self) -> None:
        self.registrations = 0

    async def Register(self, request, context):
        self.registrations += 1
        return pb.RegisterResponse(backend_id="silent-1", heartbeat_interval_seconds=0.1, lease_seconds=0.3)

    async def Heartbeat(self, request, context):
        await asyncio.Event().wait()  # never answers; the caller's deadline ends the call

    async def Deregister(self, request, context):
        return pb.DeregisterResponse()


async def test_an_unanswered_heartbeat_fails_within_one_heartbeat_period_and_the_backend_registers_again(backends):
    """The lease (0.3 s here) is far shorter than the registration calls' own timeout (5 s): a backend
    that waited that long for a stuck heartbeat would be dropped before it noticed anything."""
    gateway = _SilentHeartbeats()
    server = grpc.aio.server()
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await backends("A", f"127.0.0.1:{port}")
        started = time.monotonic()
        await wait_for(lambda: gateway.registrations >= 2, timeout_s=10, what="a registration after the lost heartbeat")
        assert time.monotonic() - started < CALL_TIMEOUT_S / 2
    finally:
        await server.stop(0)

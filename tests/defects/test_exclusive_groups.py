"""Defect 12: an exclusive device group is enforced from what its backends report, not only from the
gateway's own switching; real gateway and backend processes."""

from __future__ import annotations

import grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.common.v1 import model_pb2
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb2
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.defects.support import echo_backend, gateway_process
from tests.gateway.backends import chat_request
from tests.jobs.support import Client, eventually


def _address(process) -> str:
    return process.line.rsplit(" ", 1)[1]


async def _loaded(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        status = await admin_service_pb2_grpc.AdminServiceStub(channel).GetServiceStatus(
            admin_service_pb2.GetServiceStatusRequest(), timeout=5
        )
    return [m.name for m in status.models if m.state == model_pb2.MODEL_STATE_LOADED]


async def test_a_model_loaded_outside_the_gateway_is_unloaded_to_keep_the_group_exclusive() -> None:
    gateway, address, _ = gateway_process(gpu_mode="exclusive", heartbeat_interval_s=0.2, lease_s=2)
    backends = []
    client = Client.connect(address)
    try:
        backends = [echo_backend(name, address, "--device-group", "gpu0", "--models", "m") for name in "AB"]
        by_name = dict(zip("AB", map(_address, backends), strict=True))

        async def two_available() -> bool:
            view = await client.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability="echo"))
            return sum(b.state == registry_pb2.BACKEND_STATE_AVAILABLE for b in view.capability.backends) == 2

        await eventually(two_available, what="both members AVAILABLE")
        stub = llm_service_pb2_grpc.LlmServiceStub(client.channel)
        holder = (await stub.Chat(chat_request("hello", model="m"), timeout=10)).message.content
        other = "B" if holder == "A" else "A"
        assert await _loaded(by_name[holder]) == ["m"]

        # Outside the gateway: the other member loads the model itself (an operator, a direct call).
        async with grpc.aio.insecure_channel(by_name[other]) as channel:
            await admin_service_pb2_grpc.AdminServiceStub(channel).LoadModels(
                admin_service_pb2.LoadModelsRequest(models=["m"]), timeout=10
            )
        assert await _loaded(by_name[other]) == ["m"]

        async def exclusive_again() -> bool:
            view = await client.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability="echo"))
            reported = {b.backend.address: list(b.backend.loaded_models) for b in view.capability.backends}
            return (
                await _loaded(by_name[other]) == []
                and await _loaded(by_name[holder]) == ["m"]
                and reported == {by_name[holder]: ["m"], by_name[other]: []}
            )

        await eventually(exclusive_again, timeout_s=10, what="the group to hold models on one member only")
        # The gateway still routes to the holder without a switch, and the group stays exclusive.
        assert (await stub.Chat(chat_request("hello", model="m"), timeout=10)).message.content == holder
        assert await _loaded(by_name[other]) == []
    finally:
        await client.close()
        for process in [*backends, gateway]:
            process.kill()

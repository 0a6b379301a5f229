"""Capacity is for generation: only methods that run a model count against a backend's
max_concurrency in the gateway; listing calls pass straight through, however many there are."""

from __future__ import annotations

import asyncio

import grpc

from capmesh.gateway.server.routing.services import load_catalog
from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.catalog import CAPABILITIES
from capmesh.services.runtime.server import CapabilityService, create_server
from capmesh.services.runtime.settings import ServerSettings
from tests.gateway.backends import LLM_SERVICE, EchoServicer, chat_request
from tests.gateway.conftest import backend_states, wait_available, wait_for

CALLERS = 64


class ListingEcho(EchoServicer):
    """The echo backend with a ListModels that takes a little while, so that calls overlap."""

    async def ListModels(self, request, context):
        await asyncio.sleep(0.05)
        return llm.ListModelsResponse()


def test_the_catalogue_marks_generation_methods_and_nothing_else() -> None:
    catalog = load_catalog()
    for row in CAPABILITIES:
        methods = {m.name for service in row.services() for m in service.methods}
        assert row.model_slot_methods, f"{row.name} names no method that runs a model"
        assert set(row.model_slot_methods) <= methods, f"{row.name} marks methods its contract lacks"
    slots = {m.path.rpartition("/")[2]: m.model_slot for info in catalog.values() for m in info.methods}
    assert slots["ListVoices"] is False and slots["ListModels"] is False
    assert slots["StreamSynthesize"] is True and slots["Chat"] is True and slots["StreamGenerateImages"] is True


async def test_listing_calls_take_no_capacity_slot(gateways, channel_to):
    # A wait queue of 4: were listing calls counted, 64 at once on a 4-slot backend would overflow it.
    gateway = await gateways(route_wait_queue=4)
    settings = ServerSettings(gateway=gateway.grpc_address, max_concurrency=4, max_queue=64, grace_period_s=1)
    servicer = ListingEcho("A", step_s=0.02)
    backend = await create_server(
        CapabilityService(
            capability="echo",
            settings=settings,
            servicers=[(llm_service_pb2_grpc.add_LlmServiceServicer_to_server, servicer)],
            service_names=[LLM_SERVICE],
            engine_name="echo",
        )
    )
    try:
        channel = channel_to(gateway.grpc_address)
        await wait_available(channel, 1)
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        # Every model slot taken by a long generation...
        generations = [asyncio.ensure_future(stub.Chat(chat_request("sleep:2"))) for _ in range(4)]

        async def slots_full() -> bool:
            [status] = (await backend_states(channel)).values()
            return status.backend.max_concurrency == 4 and status.in_flight == 4

        await wait_for(slots_full, what="4 generations holding every slot")
        # ...and 64 listing calls at once still all pass, without waiting for a slot.
        outcomes = await asyncio.gather(
            *(stub.ListModels(llm.ListModelsRequest(), timeout=1.5) for _ in range(CALLERS)), return_exceptions=True
        )
        failures = [o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert failures == []
        assert len(outcomes) == CALLERS
        [status] = (await backend_states(channel)).values()
        assert status.in_flight == 4  # listing never counted
        await asyncio.gather(*generations)
    finally:
        await backend.shutdown(grace_s=0)

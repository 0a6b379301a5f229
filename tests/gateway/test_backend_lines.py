"""Routing into the lines backends keep themselves: a backend that registered max_queue takes calls
beyond its max_concurrency (it reports their queue positions), but only when no backend has a free
slot; the gateway's own route queue is for when every line is full too."""

from __future__ import annotations

import asyncio

from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import chat_request
from tests.gateway.conftest import backend_states, wait_available, wait_for


async def test_calls_beyond_the_slots_go_into_the_backends_line_not_the_route_queue(gateways, backends, channel_to):
    gateway = await gateways(route_wait_s=5)
    await backends("A", gateway.grpc_address, max_concurrency=1, max_queue=2)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    assert [s.backend.max_queue for s in (await backend_states(channel)).values()] == [2]
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    entry = next(iter(gateway.gateway.registry.entries.values()))

    calls = [asyncio.ensure_future(stub.Chat(chat_request("sleep:0.5"))) for _ in range(3)]
    await wait_for(lambda: entry.in_flight == 3, what="three calls on the one-slot backend")
    assert gateway.gateway.registry.queued.get("echo", 0) == 0
    fourth = asyncio.ensure_future(stub.Chat(chat_request("hello")))  # the line is full: the route queue
    await wait_for(lambda: gateway.gateway.registry.queued.get("echo") == 1, what="the fourth call to wait")
    answers = await asyncio.gather(*calls, fourth)
    assert [a.message.content for a in answers] == ["A"] * 4


async def test_a_free_slot_elsewhere_wins_over_a_line(gateways, backends, channel_to):
    gateway = await gateways()
    await backends("A", gateway.grpc_address, max_concurrency=1, max_queue=4)
    await backends("B", gateway.grpc_address, max_concurrency=1, max_queue=4)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    answers = await asyncio.gather(*(stub.Chat(chat_request("sleep:0.3")) for _ in range(2)))
    assert sorted(a.message.content for a in answers) == ["A", "B"]

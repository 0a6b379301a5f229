"""A backend's `max_concurrency` holds across gateways.

Each gateway counts only the calls it sent, so two gateways on one Redis can both see a free slot on
the same backend. The backend's own admission is the one place that sees every call: full (slots
and line), it answers RESOURCE_EXHAUSTED before running anything, and the gateway that sent the
call tries another backend, or, with none left, gives the caller that RESOURCE_EXHAUSTED with its
RetryInfo. Two in-process gateways share one real Redis; the backends count how many calls they
run at once.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from capmesh.client import from_rpc_error
from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.server import create_server
from tests.gateway.backends import chat_request
from tests.gateway.conftest import wait_available
from tests.scale.capacity_backend import one_slot_backend

HOLD_S = 0.1  # how long each call holds its slot on the backend


@pytest.fixture
async def mesh(redis_server):
    """`await mesh(backends)`: two gateways on one Redis, and `backends` one-slot backends with no
    line, each registered with both gateways -> (channel to A, channel to B, servicers)."""
    redis_server.flush()
    gateways, servers, channels = [], [], []

    async def start(backends: int):
        for _ in range(2):
            settings = GatewaySettings(
                port=0, http_port=0, redis_url=redis_server.url, heartbeat_interval_s=0.2, lease_s=2.0
            )
            gateways.append(await start_gateway(settings))
        addresses = ",".join(g.grpc_address for g in gateways)
        servicers = []
        for index in range(backends):
            service, servicer = one_slot_backend(f"backend-{index}", addresses, HOLD_S)
            servers.append(await create_server(service))
            servicers.append(servicer)
        channels.extend(grpc.aio.insecure_channel(g.grpc_address) for g in gateways)
        for channel in channels:
            await wait_available(channel, backends, timeout_s=10)
        return channels[0], channels[1], servicers

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.shutdown(grace_s=0)
    for gateway in gateways:
        await gateway.stop(grace_s=0)


async def _chat(channel: grpc.aio.Channel) -> str | grpc.aio.AioRpcError:
    try:
        return (
            await llm_service_pb2_grpc.LlmServiceStub(channel).Chat(chat_request("hello"), timeout=10)
        ).message.content
    except grpc.aio.AioRpcError as exc:
        return exc


async def test_one_backend_never_runs_more_than_its_slot_whatever_the_gateways_think(mesh):
    via_a, via_b, (backend,) = await mesh(1)
    outcomes = await asyncio.gather(*(_chat(channel) for channel in (via_a, via_b) * 4))
    assert backend.most_running == 1
    served = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert served and len(served) == backend.served
    for error in refused:  # full, with a retry delay: never a failure of the backend
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert from_rpc_error(error).retry_after_s is not None


async def test_a_call_refused_by_a_full_backend_runs_on_another_one(mesh):
    via_a, via_b, servicers = await mesh(2)
    # Rounds of one call through each gateway: each gateway sees both backends free and picks one
    # of two at random, so about half the rounds send both calls to the same backend.
    for _ in range(8):
        outcomes = await asyncio.gather(_chat(via_a), _chat(via_b))
        served = [o for o in outcomes if isinstance(o, str)]
        assert len(served) == 2, outcomes
        assert sorted(served) == ["backend-0", "backend-1"]
    assert [s.most_running for s in servicers] == [1, 1]

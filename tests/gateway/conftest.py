"""Gateways and echo backends on port 0, in this test's event loop; helpers that poll the registry."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from tests.gateway.backends import build_echo_service

FAST = {"heartbeat_interval_s": 0.2, "lease_s": 2.0, "log_level": "warning"}


@pytest.fixture
async def gateways():
    """`await gateways(**settings)` starts a gateway; all are stopped after the test."""
    started = []

    async def start(**overrides):
        settings = GatewaySettings(**{"port": 0, "http_port": 0, **FAST, **overrides})
        running = await start_gateway(settings)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.stop(grace_s=0)


@pytest.fixture
async def backends():
    """`await backends(name, gateway_address, **options)` starts an echo backend -> (running, servicer)."""
    started = []

    async def start(
        name: str,
        gateway: str = "",
        *,
        max_concurrency: int = 64,
        max_queue: int = 64,
        device_group: str = "",
        **options,
    ):
        settings = ServerSettings(
            gateway=gateway,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            grace_period_s=1,
            device_group=device_group,
        )
        service, servicer = build_echo_service(name, settings, **options)
        running = await create_server(service)
        started.append(running)
        return running, servicer

    yield start
    for running in reversed(started):
        await running.shutdown(grace_s=0)


async def wait_for(predicate, timeout_s: float = 5.0, what: str = "condition"):
    """Polls an async or plain predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling, not waiting a fixed time


def registry_stub(channel: grpc.aio.Channel):
    return registry_service_pb2_grpc.RegistryServiceStub(channel)


async def backend_states(channel: grpc.aio.Channel) -> dict[str, pb.BackendStatus]:
    view = await registry_stub(channel).ListCapabilities(pb.ListCapabilitiesRequest())
    return {b.backend.backend_id: b for c in view.capabilities for b in c.backends}


async def wait_available(channel: grpc.aio.Channel, count: int, timeout_s: float = 5.0) -> dict[str, pb.BackendStatus]:
    async def ready():
        states = await backend_states(channel)
        available = [s for s in states.values() if s.state == pb.BACKEND_STATE_AVAILABLE]
        return states if len(available) >= count else None

    return await wait_for(ready, timeout_s, f"{count} AVAILABLE backends")


@pytest.fixture
async def channel_to():
    """`channel_to(address)` opens an aio channel closed after the test."""
    channels = []

    def open_channel(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()

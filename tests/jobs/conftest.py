"""Fixtures: in-process stepper backends and gateways (memory or Redis job store)."""

from __future__ import annotations

import pytest

from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.jobs.service import backend_capacity
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from tests.jobs.support import Client, eventually, write_backends
from tests.runtime.stepper import build_stepper_service

FAST_JOBS = dict(
    job_lease_s=1.5,
    job_backoff_base_s=0.05,
    job_backoff_max_s=0.2,
    heartbeat_interval_s=0.5,
    lease_s=3.0,
    grace_period_s=0,
    http_port=0,
    log_level="warning",
)


@pytest.fixture
async def steppers():
    """`await steppers(n, step_s=..., max_concurrency=...)` -> [(running, engine, address)]."""
    started = []

    async def start(count: int = 1, *, step_s: float = 0.02, max_concurrency: int = 1):
        batch = []
        for _ in range(count):
            settings = ServerSettings(max_concurrency=max_concurrency, max_queue=64, grace_period_s=0)
            service, engine = build_stepper_service(settings, step_s=step_s)
            running = await create_server(service)
            batch.append((running, engine, f"127.0.0.1:{running.port}"))
        started.extend(batch)
        return batch

    yield start
    for running, _, _ in started:
        await running.shutdown(grace_s=0)


@pytest.fixture
async def gateways(tmp_path, redis_server):
    """`await gateways(store, addresses, max_concurrency=1, **settings)` -> (running, Client); the
    gateways of one test share one files folder and, for "redis", one Redis."""
    redis_server.flush()
    started = []

    async def start(store: str, addresses: list[str], *, max_concurrency: int = 1, **settings):
        backends = (
            write_backends(tmp_path / f"backends-{len(started)}.json", addresses, max_concurrency)
            if addresses
            else None
        )
        values = {**FAST_JOBS, "files_dir": str(tmp_path / "files"), **settings}
        if backends is not None:
            values["backends_file"] = str(backends)
        if store == "redis":
            values["redis_url"] = redis_server.url
        running = await start_gateway(GatewaySettings(port=0, **values))
        client = Client.connect(running.grpc_address)
        started.append((running, client))
        if addresses:
            capacity = backend_capacity(running.gateway.registry)
            await eventually(lambda: capacity("tts") >= len(addresses) * max_concurrency, what="backends available")
        return running, client

    yield start
    for running, client in reversed(started):
        await client.close()
        await running.stop(grace_s=0)


@pytest.fixture(params=["memory", "redis"])
def store(request):
    return request.param

"""The registry's idle cost as the mesh grows: a gateway process with 1000 registered, heartbeating
backends and no calls, then after they all deregister.

A fleet of N backends lives in this process: one grpc.aio server with a health service, bound to N
ports, so each backend has its own address (the gateway opens a channel and a health Watch per
backend, as in a real mesh); each registers, heartbeats at the interval the gateway asks for
(phases spread evenly) and deregisters at the end. The gateway's CPU (user + system time over wall
time, 100 % = one core) and resident memory are read from /proc through psutil:

- `idle, no backends`: the baseline;
- `idle, N backends`: after every backend registered and one lease went by;
- `idle, after N left`: after every backend deregistered (back to the baseline, or something per
  backend outlived its removal).

    python -m benchmarks.run registry [--quick]
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time

import grpc
import psutil
from grpc_health.v1 import health, health_pb2_grpc

from benchmarks.harness import Row
from benchmarks.processes import spawn
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime.server import server_options
from capmesh.services.runtime.settings import ServerSettings

NAME = "registry"
BACKENDS = 1000


class Fleet:
    """N backends on N ports of one server; registers, heartbeats and deregisters them all."""

    def __init__(self, count: int, gateway: str) -> None:
        self.count = count
        # The ping policy of a real backend's server: the gateway's keepalive pings reach it too.
        self._server = grpc.aio.server(options=server_options(ServerSettings()))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self._server)
        self.ports = [self._server.add_insecure_port("127.0.0.1:0") for _ in range(count)]
        self._channel = grpc.aio.insecure_channel(gateway)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        self.ids: list[str] = []
        self._beats: list[asyncio.Task] = []

    async def join(self) -> None:
        await self._server.start()
        for port in self.ports:
            reply = await self._stub.Register(
                pb.RegisterRequest(
                    backend=pb.Backend(
                        backend_id=f"fleet-{port}",
                        address=f"127.0.0.1:{port}",
                        capability="fleet",
                        services=["capmesh.fleet.v1.FleetService"],
                        max_concurrency=4,
                    )
                )
            )
            self.ids.append(reply.backend_id)
            self._beats.append(asyncio.ensure_future(self._beat(reply.backend_id, reply.heartbeat_interval_seconds)))

    async def _beat(self, backend_id: str, interval: float) -> None:
        await asyncio.sleep(random.uniform(0, interval))  # spread the fleet's heartbeats over the interval
        while True:
            reply = await self._stub.Heartbeat(pb.HeartbeatRequest(backend_id=backend_id))
            interval = reply.heartbeat_interval_seconds or interval  # as services/runtime/registration.py does
            await asyncio.sleep(interval)  # the heartbeat period the gateway asked for

    async def leave(self) -> None:
        for task in self._beats:
            task.cancel()
        await asyncio.gather(*self._beats, return_exceptions=True)
        for backend_id in self.ids:
            await self._stub.Deregister(pb.DeregisterRequest(backend_id=backend_id))
        await self._server.stop(0)
        await self._channel.close()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _idle_cost(process: psutil.Process, window_s: float) -> tuple[float, float]:
    """(percent of one core, resident MB) of the process over `window_s` of wall time."""
    before, started = _cpu_seconds(process), time.monotonic()
    await asyncio.sleep(window_s)  # the measured window
    used = _cpu_seconds(process) - before
    return 100 * used / (time.monotonic() - started), process.memory_info().rss / 2**20


async def _registered(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        view = await registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
            pb.ListCapabilitiesRequest()
        )
    return sum(len(c.backends) for c in view.capabilities)


async def _measure(quick: bool, redis_url: str) -> list[Row]:
    window_s = 5.0 if quick else 15.0
    count = 200 if quick else BACKENDS
    env_settings = {
        "CAPMESH_GATEWAY_PORT": "0",
        "CAPMESH_GATEWAY_HTTP_PORT": "0",
        "CAPMESH_GATEWAY_LOG_LEVEL": "error",
        "CAPMESH_GATEWAY_FILES_DIR": tempfile.mkdtemp(prefix="capmesh-bench-registry-"),
        "CAPMESH_GATEWAY_REDIS_URL": redis_url,
    }
    os.environ.update(env_settings)
    process, banner = await spawn(["-m", "tests.jobs.gateway_process"], "listening on")
    address = banner.split("grpc ", 1)[1].split(" ", 1)[0]
    gateway = psutil.Process(process.pid)
    store = "redis" if redis_url else "memory"
    rows = []
    try:
        await asyncio.sleep(2.0)  # let the start-up settle before the baseline
        base_cpu, base_mb = await _idle_cost(gateway, window_s)
        fleet = Fleet(count, address)
        await fleet.join()
        await asyncio.sleep(5.0)  # past the first heartbeats and health watches
        full_cpu, full_mb = await _idle_cost(gateway, window_s)
        assert await _registered(address) == count
        await fleet.leave()
        await asyncio.sleep(5.0)  # channels close, watchers stop
        left_cpu, left_mb = await _idle_cost(gateway, window_s)
        assert await _registered(address) == 0
    finally:
        process.terminate()
        await process.wait()
    for case, cpu, mb in (
        ("idle, no backends", base_cpu, base_mb),
        (f"idle, {count} backends", full_cpu, full_mb),
        (f"idle, after {count} left", left_cpu, left_mb),
    ):
        rows.append(Row(NAME, f"{store}: {case}", "% of a core", cpu, cpu, 1))
        rows.append(Row(NAME, f"{store}: {case} (RSS)", "MB", mb, mb, 1))
    return rows


def run(quick: bool = False) -> list[Row]:
    from tests.support.redis_server import RedisServer

    rows = asyncio.run(_measure(quick, ""))
    with RedisServer() as redis_server:
        rows += asyncio.run(_measure(quick, redis_server.url))
    return rows

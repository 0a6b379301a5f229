"""What keeping `max_concurrency` true across gateways costs per call.

The design (gateway/routing/call.py): no shared slot counter; a backend whose slots and line are
full answers RESOURCE_EXHAUSTED before running anything, and the gateway tries another backend. A
call that finds room pays nothing for it; a call sent to a backend that another gateway filled
pays one refused round trip, then runs elsewhere.

The mesh: one gateway in a process of its own, two one-slot backends without a line in this
process (tests/scale/capacity_backend.py). Backend F's slot is held by a call made straight to it,
so the gateway (which counts only its own calls) sees F free, just as it would had another gateway
filled it; backend G is free. Sequential unary calls through the gateway land on F first or on G
first at random (the router's two random choices, both loads 0), interleaved in one run, so the
two cases alternate call by call; F's refusal count tells which case each call was:

- `call, backend had room`: went to G at once (the baseline);
- `call, refused by a full backend, then run on another`: F refused it, G ran it.

    python -m benchmarks.run capacity [--quick]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import grpc

from benchmarks.harness import Row, Stats
from benchmarks.processes import spawn
from capmesh.client import aio_channel
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.server import create_server
from tests.gateway.backends import chat_request
from tests.scale.capacity_backend import CountingServicer, one_slot_backend

NAME = "capacity"


async def _wait_routable(stub: llm_service_pb2_grpc.LlmServiceStub, full: CountingServicer) -> None:
    """Until the gateway routes to both backends: G has answered and F has refused."""
    answered = False
    deadline = time.monotonic() + 60
    while not (answered and full.refused):
        if time.monotonic() > deadline:
            raise RuntimeError("the two backends never both became routable")
        try:
            answered = answered or (await stub.Chat(chat_request("hello"))).message.content == "G"
        except grpc.aio.AioRpcError:  # no backend registered yet, or only F (refusing)
            await asyncio.sleep(0.05)  # polling until both backends are routable


async def _measure(quick: bool) -> list[Row]:
    calls = 400 if quick else 4000
    env = {
        **os.environ,
        "CAPMESH_GATEWAY_PORT": "0",
        "CAPMESH_GATEWAY_HTTP_PORT": "0",
        "CAPMESH_GATEWAY_LOG_LEVEL": "error",
        "CAPMESH_GATEWAY_FILES_DIR": tempfile.mkdtemp(prefix="capmesh-bench-capacity-"),
        "CAPMESH_GATEWAY_HEARTBEAT_INTERVAL_S": "0.5",
    }
    process, banner = await spawn(["-m", "tests.jobs.gateway_process"], "listening on", env=env)
    address = banner.split("grpc ", 1)[1].split(" ", 1)[0]
    full_service, full = one_slot_backend("F", address, hold_s=0.0)
    free_service, _ = one_slot_backend("G", address, hold_s=0.0)
    servers = [await create_server(full_service), await create_server(free_service)]
    release = asyncio.Event()
    holder_ready = asyncio.Event()

    async def hold_full() -> None:  # F's one slot, taken by a call that never went through the gateway
        async with full.runtime.slot():
            holder_ready.set()
            await release.wait()

    holder = asyncio.ensure_future(hold_full())
    await holder_ready.wait()
    channel = aio_channel(address)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    samples: dict[bool, list[float]] = {False: [], True: []}
    try:
        await _wait_routable(stub, full)
        for _ in range(calls):
            refused_before = full.refused
            started = time.perf_counter()
            answer = await stub.Chat(chat_request("hello"))
            elapsed = time.perf_counter() - started
            assert answer.message.content == "G"
            samples[full.refused > refused_before].append(elapsed)
    finally:
        release.set()
        await holder
        await channel.close()
        for server in servers:
            await server.shutdown(grace_s=0)
        process.terminate()
        await process.wait()
    direct = Stats(tuple(samples[False]))
    refused = Stats(tuple(samples[True]))
    base = "call, backend had room"
    return [
        Row.from_stats(NAME, base, "ms", direct, scale=1e3),
        Row.from_stats(
            NAME, "call, refused by a full backend, then run on another", "ms", refused, scale=1e3, baseline=base
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_measure(quick))

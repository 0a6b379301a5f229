"""More cores for the gateway: cheap unary calls/s through a 1-worker and a 2-worker gateway, one run.

Processes: a redis-server (workers share the registry through it, and so does the 1-worker gateway,
so that both pay the same for it), two echo backends (tests/gateway/backends.py; they answer at
once, so the gateway is the work measured), the two gateways (`capmesh gateway --workers 1` and
`--workers 2`, each a process tree of its own, both given the backends in a backends file), and
`CLIENTS` client processes, each opening `CHANNELS` fresh connections (the kernel spreads
connections, not calls, across workers) with `IN_FLIGHT` calls in flight on each. One round asks
every client at once for `seconds` of calls through one gateway, then through the other; the order
alternates round by round, and the table shows each gateway's calls/s (median and spread) and the
per-round ratio 2 workers / 1 worker.

On a machine with few cores the clients, the backends and the workers take turns on the same
cores, so the ratio is bounded well below 2 there: read it on a machine with spare cores (on 2
cores the gain is small, and it is reported as measured).

    python -m benchmarks.run workers [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn
from capmesh.llm.v1 import llm_service_pb2

NAME = "workers"
LLM_SERVICE = "capmesh.llm.v1.LlmService"
CHAT = f"/{LLM_SERVICE}/Chat"
CLIENTS = 4  # client processes: one Python client process tops out below one gateway worker
CHANNELS = 4  # connections per client process
IN_FLIGHT = 4  # calls in flight per connection
BACKENDS = 2


async def _client_round(request: dict[str, Any]) -> dict[str, Any]:
    """A client process's part of a round: fresh connections, warmed up, then calls for `seconds`."""
    payload = llm_service_pb2.ChatRequest(
        messages=[llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content="hello")]
    ).SerializeToString()
    # A subchannel pool per channel: one connection each, as separate clients would have.
    channels = [
        grpc.aio.insecure_channel(request["address"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(request["channels"])
    ]
    try:
        calls = [channel.unary_unary(CHAT) for channel in channels]
        await asyncio.gather(*(call(payload) for call in calls))  # connected, and the route warm
        deadline = time.perf_counter() + request["seconds"]

        async def loop(call) -> int:
            done = 0
            while time.perf_counter() < deadline:
                await call(payload)
                done += 1
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(loop(call) for call in calls for _ in range(request["in_flight"])))
        return {"calls": sum(counts), "seconds": time.perf_counter() - started}
    finally:
        for channel in channels:
            await channel.close()


async def _gateway(workers: int, redis_url: str, backends_file: Path) -> tuple[asyncio.subprocess.Process, str]:
    args = ["--port", "0", "--http-port", "0", "--workers", str(workers), "--redis", redis_url]
    settings = ["--set", "log_level=warning", "--set", f"backends_file={backends_file}"]
    process, banner = await spawn(["-m", "capmesh.cli.main", "gateway", *args, *settings], " listening on ")
    return process, banner.split(" grpc ", 1)[1].split()[0]


async def _wait_routable(address: str) -> None:
    """Polls a call through every worker's likely connection until all route (each health-checks the
    backends first)."""
    payload = llm_service_pb2.ChatRequest().SerializeToString()
    deadline = time.monotonic() + 30
    for _ in range(16):  # fresh connections: both workers (with near certainty) answer some
        async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            while True:
                try:
                    await channel.unary_unary(CHAT)(payload, timeout=5)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)  # polling until the backends are routable


async def _measure(quick: bool, redis_url: str, folder: Path) -> list[Row]:
    rounds, seconds = (3, 1.0) if quick else (7, 3.0)
    processes: list[asyncio.subprocess.Process] = []
    clients: list[Worker] = []
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        addresses = []
        for i in range(BACKENDS):
            backend, banner = await spawn(
                ["-m", "tests.gateway.backend_process", f"bench-{i}", "--max-concurrency", "1024"], " listening on "
            )
            processes.append(backend)
            addresses.append(banner.split(" listening on ", 1)[1].strip())
        backends_file = folder / "backends.json"
        entries = [
            {"address": a, "capability": "echo", "services": [LLM_SERVICE], "max_concurrency": 1024} for a in addresses
        ]
        backends_file.write_text(json.dumps({"backends": entries}))
        gateways = {}
        for workers in rates:
            process, address = await _gateway(workers, redis_url, backends_file)
            processes.append(process)
            gateways[workers] = address
            await _wait_routable(address)
        starting = (Worker.start("benchmarks.bench_workers", "client") for _ in range(CLIENTS))
        clients = list(await asyncio.gather(*starting))
        for round_ in range(rounds + 1):  # round 0 warms both gateways up and is not counted
            order = list(gateways.items()) if round_ % 2 else list(reversed(gateways.items()))
            for workers, address in order:
                request = {"address": address, "channels": CHANNELS, "in_flight": IN_FLIGHT, "seconds": seconds}
                replies = await asyncio.gather(*(client.ask(request) for client in clients))
                rate = sum(r["calls"] for r in replies) / max(r["seconds"] for r in replies)
                if round_:
                    rates[workers].append(rate)
    finally:
        for client in clients:
            await client.stop()
        for process in reversed(processes):
            if process.returncode is None:
                process.terminate()
                await process.wait()

    in_flight = CLIENTS * CHANNELS * IN_FLIGHT
    one, two = (f"{n} unary calls/s, {in_flight} in flight" for n in ("1 worker", "2 workers"))
    return [
        Row.from_samples(NAME, one, "calls/s", rates[1], higher_is_better=True),
        Row.from_samples(NAME, two, "calls/s", rates[2], higher_is_better=True, baseline=one),
        ratio_row(NAME, "2 workers / 1 worker calls/s", rates[2], rates[1]),
    ]


def run(quick: bool) -> list[Row]:
    from tests.support.redis_server import RedisServer

    with RedisServer() as redis_server, tempfile.TemporaryDirectory(prefix="capmesh-bench-workers-") as folder:
        return asyncio.run(_measure(quick, redis_server.url, Path(folder)))


if __name__ == "__main__" and sys.argv[1:] == ["client"]:
    asyncio.run(serve_requests(_client_round))

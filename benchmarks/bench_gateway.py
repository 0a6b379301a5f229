"""The gateway's relay cost: the same calls through the gateway and directly to the backend, one run.

Three processes: the gateway (`capmesh gateway`), one echo backend registered with it (the test
capability in tests/gateway/backends.py, which answers at once, so the figures are the relay's
and gRPC's own cost), and this client. Direct and gateway samples are taken in alternating
blocks so that both see the same machine load.

- unary latency: one call at a time, p50 and p99 (goal: gateway p50 - direct p50 <= 0.5 ms);
- unary calls/s with 16 calls in flight;
- streaming messages/s with 1 and 32 concurrent streams (goal: gateway >= 50 % of direct).
What tracing costs on this path, on and off, is bench_tracing's.

    python -m benchmarks.run gateway [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import grpc

from benchmarks.harness import Row, Stats
from benchmarks.processes import spawn, wait_available
from capmesh.llm.v1 import llm_service_pb2

NAME = "gateway"
CHAT = "/capmesh.llm.v1.LlmService/Chat"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"


def _request(prompt: str, streaming: bool) -> bytes:
    message = llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content=prompt)
    cls = llm_service_pb2.StreamChatRequest if streaming else llm_service_pb2.ChatRequest
    return cls(messages=[message]).SerializeToString()


async def unary_latencies(channel: grpc.aio.Channel, count: int) -> list[float]:
    call, request, samples = channel.unary_unary(CHAT), _request("hello", False), []
    for _ in range(count):
        started = time.perf_counter()
        await call(request)
        samples.append(time.perf_counter() - started)
    return samples


async def unary_rate(channel: grpc.aio.Channel, count: int, concurrency: int) -> float:
    call, request = channel.unary_unary(CHAT), _request("hello", False)

    async def worker(n: int) -> None:
        for _ in range(n):
            await call(request)

    started = time.perf_counter()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    return (count // concurrency) * concurrency / (time.perf_counter() - started)


async def _stream_rate(channel: grpc.aio.Channel, streams: int, messages: int) -> float:
    call, request = channel.unary_stream(STREAM_CHAT), _request(f"n:{messages}", True)

    async def one() -> int:
        received = 0
        stream = call(request)
        while await stream.read() is not grpc.aio.EOF:
            received += 1
        return received

    started = time.perf_counter()
    received = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return received / (time.perf_counter() - started)


async def start_pair(env: dict[str, str]) -> tuple[list[asyncio.subprocess.Process], str, str]:
    """A gateway and one echo backend registered with it: (processes, gateway address, backend address)."""
    gateway, banner = await spawn(
        ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", "--set", "log_level=warning"],
        " listening on ",
        env,
    )
    gateway_address = banner.split(" grpc ", 1)[1].split()[0]
    backend, banner = await spawn(
        ["-m", "tests.gateway.backend_process", "bench", "--gateway", gateway_address, "--max-concurrency", "512"],
        " listening on ",
        env,
    )
    await wait_available(gateway_address)
    return [backend, gateway], gateway_address, banner.split(" listening on ", 1)[1].strip()


async def _measure(quick: bool) -> list[Row]:
    untraced = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes, gateway_address, backend_address = await start_pair(untraced)
        async with (
            grpc.aio.insecure_channel(backend_address) as direct,
            grpc.aio.insecure_channel(gateway_address) as via_gateway,
        ):
            channels = {"direct": direct, "gateway": via_gateway}
            blocks, per_block = (4, 100) if quick else (10, 300)
            repeats = 2 if quick else 5
            for channel in channels.values():
                await unary_latencies(channel, 200)  # warm both paths up
            latencies: dict[str, list[float]] = {k: [] for k in channels}
            rates: dict[str, list[float]] = {}
            for _ in range(blocks):
                for key, channel in channels.items():
                    latencies[key].extend(await unary_latencies(channel, per_block))
            cases = [
                ("unary calls/s, 16 in flight", lambda ch: unary_rate(ch, 800 if quick else 3200, 16)),
                ("stream msgs/s, 1 stream", lambda ch: _stream_rate(ch, 1, 2000 if quick else 10000)),
                ("stream msgs/s, 32 streams", lambda ch: _stream_rate(ch, 32, 200 if quick else 1000)),
            ]
            for case, measure in cases:
                for _ in range(repeats):
                    for key, channel in channels.items():
                        rates.setdefault(f"{key} {case}", []).append(await measure(channel))
    finally:
        for process in processes:
            process.terminate()
            await process.wait()

    rows = []
    baselines = {"gateway": "direct"}
    for key in channels:
        rows.append(
            Row.from_stats(
                NAME,
                f"{key} unary latency",
                "ms",
                Stats(tuple(latencies[key])),
                scale=1000,
                baseline=f"{baselines[key]} unary latency" if key in baselines else "",
            )
        )
    overhead_ms = (statistics.median(latencies["gateway"]) - statistics.median(latencies["direct"])) * 1000
    rows.append(Row(NAME, "gateway unary p50 overhead (goal <= 0.5)", "ms", overhead_ms, overhead_ms, 1))
    for case, _ in cases:
        for key in channels:
            rows.append(
                Row.from_stats(
                    NAME,
                    f"{key} {case}",
                    case.split(",")[0].split()[-1],
                    Stats(tuple(rates[f"{key} {case}"])),
                    higher_is_better=True,
                    baseline=f"{baselines[key]} {case}" if key in baselines else "",
                )
            )
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))

"""The gateway's relay cost: the same calls through the gateway and straight to the backend.

Processes: the gateway (`capmesh gateway`), one echo backend registered with it (the test
capability in tests/gateway/backends.py, which answers at once, so the figures are the relay's
and gRPC's own cost), and two client workers: one calls the backend directly (the baseline), the
other calls through the gateway. Each client runs in a process of its own, so neither shares an
interpreter, event loop or GIL with the other side or with this runner. Every round asks both for
the same measurement, the side that goes first alternating round by round; each target is a
ratio (or a difference) of the two sides within one round, shown as the median of the rounds and
their spread.

Targets (issue 20), one row each:
- unary p50 overhead: gateway p50 - direct p50 of Chat, one call at a time, <= 0.4 ms;
- unary calls/s with 16 calls in flight, >= 0.6 of direct;
- stream messages/s over 16 concurrent streams, >= 0.6 of direct;
- a cheap unary call (ListModels, which runs no model and so takes no capacity slot) from 64
  callers at once, >= 0.6 of direct calls/s with no RESOURCE_EXHAUSTED (every failed call is
  counted and shown).
Ratios swing with whatever else the machine runs; the gateway process's own CPU time per relayed
call or message (user + system, from /proc, Linux only) swings far less, so each case also shows
it: the figure to compare between two versions of the gateway on a shared machine.
What tracing costs on this path, on and off, is bench_tracing's.

    python -m benchmarks.run gateway [--quick]
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn, wait_available
from capmesh.llm.v1 import llm_service_pb2

NAME = "gateway"
CHAT = "/capmesh.llm.v1.LlmService/Chat"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"
LIST_MODELS = "/capmesh.llm.v1.LlmService/ListModels"


def _request(prompt: str, streaming: bool) -> bytes:
    message = llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content=prompt)
    cls = llm_service_pb2.StreamChatRequest if streaming else llm_service_pb2.ChatRequest
    return cls(messages=[message]).SerializeToString()


# -- what a client worker measures (in its own process) ------------------------------------------
async def unary_latencies(channel: grpc.aio.Channel, count: int) -> list[float]:
    call, request, samples = channel.unary_unary(CHAT), _request("hello", False), []
    for _ in range(count):
        started = time.perf_counter()
        await call(request)
        samples.append(time.perf_counter() - started)
    return samples


async def unary_rate(channel: grpc.aio.Channel, count: int, concurrency: int) -> float:
    """Chat calls/s with `concurrency` calls in flight (bench_tracing and bench_xds use it too)."""
    return (await calls_rate(channel, CHAT, _request("hello", False), count, concurrency))["value"]


async def calls_rate(channel: grpc.aio.Channel, method: str, request: bytes, count: int, callers: int) -> dict:
    """Calls/s of `callers` concurrent loops of `count // callers` calls, and failures by code."""
    call = channel.unary_unary(method)
    failures: dict[str, int] = {}

    async def caller(n: int) -> None:
        for _ in range(n):
            try:
                await call(request)
            except grpc.aio.AioRpcError as exc:
                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(count // callers) for _ in range(callers)))
    return {"value": (count // callers) * callers / (time.perf_counter() - started), "failures": failures}


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


async def _client_worker(address: str) -> None:
    """`python -m benchmarks.bench_gateway ADDRESS`: answers the runner's requests for measurements."""
    async with grpc.aio.insecure_channel(address) as channel:

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            case, n = request["case"], request["n"]
            if case == "latency":
                return {"value": statistics.median(await unary_latencies(channel, n)) * 1000}
            if case == "unary":
                return await calls_rate(channel, CHAT, _request("hello", False), n, request["callers"])
            if case == "cheap":
                return await calls_rate(channel, LIST_MODELS, b"", n, request["callers"])
            if case == "stream":
                return {"value": await _stream_rate(channel, request["streams"], n)}
            raise ValueError(f"unknown case {case!r}")

        await unary_latencies(channel, 200)  # warm the channel and both processes up
        await serve_requests(handle)


# -- the runner ---------------------------------------------------------------------------------
async def start_pair(
    env: dict[str, str], max_concurrency: int = 512
) -> tuple[list[asyncio.subprocess.Process], str, str]:
    """A gateway and one echo backend registered with it: (processes, gateway address, backend address)."""
    gateway, banner = await spawn(
        ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", "--set", "log_level=warning"],
        " listening on ",
        env,
    )
    gateway_address = banner.split(" grpc ", 1)[1].split()[0]
    backend, banner = await spawn(
        [
            "-m",
            "tests.gateway.backend_process",
            "bench",
            "--gateway",
            gateway_address,
            "--max-concurrency",
            f"{max_concurrency}",
        ],
        " listening on ",
        env,
    )
    await wait_available(gateway_address)
    return [backend, gateway], gateway_address, banner.split(" listening on ", 1)[1].strip()


# (row name, unit, request to each worker); rates unless the unit is ms.
Case = tuple[str, str, dict[str, Any]]


def _cases(quick: bool) -> list[Case]:
    scale = 1 if quick else 4
    return [
        ("unary p50 latency", "ms", {"case": "latency", "n": 200 * scale}),
        ("unary calls/s, 16 in flight", "calls/s", {"case": "unary", "n": 800 * scale, "callers": 16}),
        ("stream msgs/s, 1 stream", "msgs/s", {"case": "stream", "n": 2000 * scale, "streams": 1}),
        ("stream msgs/s, 16 streams", "msgs/s", {"case": "stream", "n": 150 * scale, "streams": 16}),
        (
            "cheap unary (ListModels) calls/s, 64 callers",
            "calls/s",
            {"case": "cheap", "n": 1280 * scale, "callers": 64},
        ),
    ]


def _operations(request: dict[str, Any]) -> int:
    """How many calls (or, for streams, messages) one measurement relays."""
    n = request["n"]
    if request["case"] == "stream":
        return request["streams"] * (n + 1)  # n deltas and the result per stream
    callers = request.get("callers", 1)
    return (n // callers) * callers


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rounds(
    workers: dict[str, Worker], cases: list[Case], rounds: int, gateway_pid: int
) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """Each case `rounds` times on both sides, the first side alternating: samples by (side, case),
    the gateway's CPU microseconds per relayed call or message by ("cpu", case), and the failed
    calls by side and status code."""
    samples: dict[tuple[str, str], list[float]] = {}
    failures: dict[str, int] = {}
    sides = list(workers)
    for round_ in range(rounds):
        order = sides if round_ % 2 == 0 else sides[::-1]
        for case, _, request in cases:
            for side in order:
                cpu = _cpu_seconds(gateway_pid)
                reply = await workers[side].ask(request)
                if side == "gateway":
                    used = _cpu_seconds(gateway_pid) - cpu
                    samples.setdefault(("cpu", case), []).append(used / _operations(request) * 1e6)
                samples.setdefault((side, case), []).append(reply["value"])
                for code, count in reply.get("failures", {}).items():
                    failures[f"{side} {code}"] = failures.get(f"{side} {code}", 0) + count
    return samples, failures


async def _measure(quick: bool) -> list[Row]:
    untraced = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    processes: list[asyncio.subprocess.Process] = []
    workers: dict[str, Worker] = {}
    cases = _cases(quick)
    try:
        # The default capacity (4 model slots): Chat and StreamChat beyond it wait in the backend's
        # line (which the echo backend serves at once), and ListModels is not counted at all.
        processes, gateway_address, backend_address = await start_pair(untraced, max_concurrency=4)
        for side, address in (("direct", backend_address), ("gateway", gateway_address)):
            workers[side] = await Worker.start("benchmarks.bench_gateway", address, env=untraced)
        samples, failures = await _rounds(workers, cases, 3 if quick else 7, processes[-1].pid)
    finally:
        for worker in workers.values():
            await worker.stop()
        for process in processes:
            process.terminate()
            await process.wait()

    rows = []
    for case, unit, _ in cases:
        direct, gateway = samples[("direct", case)], samples[("gateway", case)]
        higher = unit != "ms"
        rows.append(Row.from_samples(NAME, f"direct {case}", unit, direct, higher_is_better=higher))
        rows.append(
            Row.from_samples(NAME, f"gateway {case}", unit, gateway, higher_is_better=higher, baseline=f"direct {case}")
        )
        if higher:
            rows.append(ratio_row(NAME, f"gateway / direct {case} (goal >= 0.6)", gateway, direct))
        else:
            overheads = [g - d for g, d in zip(gateway, direct, strict=True)]
            rows.append(Row.from_samples(NAME, "gateway unary p50 overhead, per round (goal <= 0.4)", "ms", overheads))
        if not any(math.isnan(cpu) for cpu in samples[("cpu", case)]):
            per = "message" if "stream" in case else "call"
            rows.append(Row.from_samples(NAME, f"gateway CPU per {per}, {case}", "us", samples[("cpu", case)]))
    refused = failures.get("gateway RESOURCE_EXHAUSTED", 0)
    failed = sum(failures.values())
    rows.append(Row(NAME, "gateway calls refused with RESOURCE_EXHAUSTED (goal 0)", "calls", refused, refused, 1))
    rows.append(Row(NAME, "failed calls, any code, both sides (expected 0)", "calls", failed, failed, 1))
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    asyncio.run(_client_worker(sys.argv[1]))

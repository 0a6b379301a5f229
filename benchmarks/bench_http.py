"""The HTTP bridge's cost: the same StreamChat stream over gRPC, over SSE and over the OpenAI
streaming route, all through the gateway, and a small unary route over HTTP and over gRPC.

Processes: the gateway (`capmesh gateway`, HTTP side included), one echo backend registered with
it (tests/gateway/backends.py: StreamChat "n:K" streams K deltas at once, so the figures are the
relay's own cost), and two client workers, each in a process of its own: one speaks gRPC to the
gateway (the baseline), the other HTTP. Every round asks both for each measurement, the side
that goes first alternating round by round; each target is the ratio of the two sides within one
round, shown as the median of the rounds and their spread.

- stream events/s: SSE (`POST /v1/llm:streamChat`) and OpenAI SSE (`POST /v1/chat/completions`
  with `stream: true`) vs gRPC StreamChat (goal: both >= 0.8 of gRPC);
- time to the first event over SSE vs gRPC;
- requests/s, one at a time, for GET /v1/capabilities vs RegistryService.ListCapabilities.

    python -m benchmarks.run http [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import grpc
import httpx

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn, wait_available
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2

NAME = "http"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"
LIST_CAPABILITIES = "/capmesh.gateway.v1.RegistryService/ListCapabilities"


# -- what a client worker measures (in its own process) ------------------------------------------
async def _grpc_stream(channel: grpc.aio.Channel, events: int) -> tuple[float, float]:
    """(seconds for the whole stream, seconds to the first message)."""
    request = llm_service_pb2.StreamChatRequest(
        messages=[llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content=f"n:{events}")]
    ).SerializeToString()
    started = time.perf_counter()
    first = 0.0
    received = 0
    stream = channel.unary_stream(STREAM_CHAT)(request)
    while await stream.read() is not grpc.aio.EOF:
        received += 1
        first = first or time.perf_counter() - started
    assert received == events + 1, received  # K deltas and the result
    return time.perf_counter() - started, first


async def _sse_stream(http: httpx.AsyncClient, path: str, body: dict, least: int) -> tuple[float, float]:
    """(seconds for the whole stream, seconds to the first event); at least `least` events."""
    started = time.perf_counter()
    first = 0.0
    received = 0
    async with http.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                json.loads(line[5:])
                received += 1
                first = first or time.perf_counter() - started
    assert received >= least, received
    return time.perf_counter() - started, first


def _sse_request(events: int) -> dict:
    return {"messages": [{"role": "ROLE_USER", "content": f"n:{events}"}]}


def _openai_request(events: int) -> dict:
    return {"model": "echo", "stream": True, "messages": [{"role": "user", "content": f"n:{events}"}]}


async def _unary_grpc(channel: grpc.aio.Channel, count: int) -> list[float]:
    call, samples = channel.unary_unary(LIST_CAPABILITIES), []
    request = pb.ListCapabilitiesRequest().SerializeToString()
    for _ in range(count):
        started = time.perf_counter()
        pb.ListCapabilitiesResponse.FromString(await call(request))
        samples.append(time.perf_counter() - started)
    return samples


async def _unary_http(http: httpx.AsyncClient, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await http.get("/v1/capabilities")
        response.json()
        samples.append(time.perf_counter() - started)
    return samples


async def _grpc_worker(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            if request["case"] == "unary":
                return {"value": statistics.median(await _unary_grpc(channel, request["n"]))}
            total, first = await _grpc_stream(channel, request["n"])
            return {"total": total, "first": first}

        await _grpc_stream(channel, 50)  # warm up
        await _unary_grpc(channel, 20)
        await serve_requests(handle)


async def _http_worker(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            case, n = request["case"], request["n"]
            if case == "unary":
                return {"value": statistics.median(await _unary_http(http, n))}
            if case == "sse":
                total, first = await _sse_stream(http, "/v1/llm:streamChat", _sse_request(n), n + 1)
            else:
                total, first = await _sse_stream(http, "/v1/chat/completions", _openai_request(n), n)
            return {"total": total, "first": first}

        await _sse_stream(http, "/v1/llm:streamChat", _sse_request(50), 51)  # warm up
        await _sse_stream(http, "/v1/chat/completions", _openai_request(50), 50)
        await _unary_http(http, 20)
        await serve_requests(handle)


# -- the runner ---------------------------------------------------------------------------------
async def _measure(quick: bool) -> list[Row]:
    gateway, banner = await spawn(
        ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", "--set", "log_level=warning"],
        " listening on ",
    )
    grpc_address = banner.split(" grpc ", 1)[1].split()[0]
    http_url = banner.split(" http ", 1)[1].split()[0]
    backend, _ = await spawn(
        ["-m", "tests.gateway.backend_process", "bench", "--gateway", grpc_address, "--max-concurrency", "64"],
        " listening on ",
    )
    events = 300 if quick else 2000
    rounds = 3 if quick else 8
    unary_count = 50 if quick else 200
    samples: dict[str, list[float]] = {}
    workers: dict[str, Worker] = {}
    try:
        await wait_available(grpc_address)
        workers["grpc"] = await Worker.start("benchmarks.bench_http", "grpc", grpc_address)
        workers["http"] = await Worker.start("benchmarks.bench_http", "http", http_url)
        for round_ in range(rounds):
            # (sample key, worker, case): gRPC first in even rounds, last in odd ones
            plan = [("grpc", "grpc", "grpc"), ("sse", "http", "sse"), ("openai", "http", "openai")]
            for key, side, case in plan if round_ % 2 == 0 else plan[::-1]:
                reply = await workers[side].ask({"case": case, "n": events})
                samples.setdefault(f"{key} events/s", []).append(events / reply["total"])
                samples.setdefault(f"{key} first event", []).append(reply["first"] * 1000)
            for side in ("grpc", "http") if round_ % 2 == 0 else ("http", "grpc"):
                reply = await workers[side].ask({"case": "unary", "n": unary_count})
                samples.setdefault(f"{side} unary", []).append(reply["value"])
    finally:
        for worker in workers.values():
            await worker.stop()
        for process in (backend, gateway):
            process.terminate()
            await process.wait()

    grpc_case = f"grpc StreamChat {events} events"
    rows = [Row.from_samples(NAME, grpc_case, "events/s", samples["grpc events/s"], higher_is_better=True)]
    for key, route in (("sse", "sse StreamChat"), ("openai", "openai SSE chat.completions")):
        rows.append(
            Row.from_samples(
                NAME,
                f"{route} {events} events",
                "events/s",
                samples[f"{key} events/s"],
                higher_is_better=True,
                baseline=grpc_case,
            )
        )
        rows.append(
            ratio_row(
                NAME, f"{route} / grpc events/s (goal >= 0.8)", samples[f"{key} events/s"], samples["grpc events/s"]
            )
        )
    rows.append(Row.from_samples(NAME, "grpc time to first event", "ms", samples["grpc first event"]))
    rows.append(
        Row.from_samples(
            NAME, "sse time to first event", "ms", samples["sse first event"], baseline="grpc time to first event"
        )
    )
    grpc_unary_case = "grpc ListCapabilities requests/s, 1 at a time"
    for key, route in (("grpc unary", "grpc ListCapabilities"), ("http unary", "http GET /v1/capabilities")):
        rows.append(
            Row.from_samples(
                NAME,
                f"{route} requests/s, 1 at a time",
                "req/s",
                [1 / s for s in samples[key]],
                higher_is_better=True,
                baseline=grpc_unary_case if key == "http unary" else "",
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    side, target = sys.argv[1:3]
    asyncio.run(_grpc_worker(target) if side == "grpc" else _http_worker(target))

"""The HTTP bridge's cost: the same StreamChat stream over SSE and over gRPC through the gateway,
and a small unary route over HTTP and over gRPC, in one run.

Three processes: the gateway (`capmesh gateway`, HTTP side included), one echo backend registered
with it (tests/gateway/backends.py: StreamChat "n:K" streams K deltas at once, so the figures are
the relay's own cost), and this client. gRPC and SSE samples alternate so both see the same load.

- stream events/s over SSE vs gRPC (one stream of K events), and the added time per event;
- time to the first event over SSE vs gRPC;
- requests/s, one at a time, for GET /v1/capabilities vs RegistryService.ListCapabilities.

    python -m benchmarks.run http [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import grpc
import httpx

from benchmarks.harness import Row, Stats
from benchmarks.processes import spawn, wait_available
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2

NAME = "http"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"
LIST_CAPABILITIES = "/capmesh.gateway.v1.RegistryService/ListCapabilities"


async def _grpc_stream(channel: grpc.aio.Channel, events: int) -> tuple[float, float]:
    """(seconds for the whole stream, seconds to the first message)."""
    request = llm_service_pb2.StreamChatRequest(
        messages=[llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content=f"n:{events}")]
    ).SerializeToString()
    started = time.perf_counter()
    first = None
    received = 0
    stream = channel.unary_stream(STREAM_CHAT)(request)
    while await stream.read() is not grpc.aio.EOF:
        received += 1
        first = first or time.perf_counter() - started
    assert received == events + 1, received  # K deltas and the result
    return time.perf_counter() - started, first


async def _sse_stream(http: httpx.AsyncClient, events: int) -> tuple[float, float]:
    body = {"messages": [{"role": "ROLE_USER", "content": f"n:{events}"}]}
    started = time.perf_counter()
    first = None
    received = 0
    async with http.stream("POST", "/v1/llm:streamChat", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])
                received += 1
                first = first or time.perf_counter() - started
    assert received == events + 1, received
    return time.perf_counter() - started, first


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
    repeats = 3 if quick else 8
    unary_count = 100 if quick else 500
    samples: dict[str, list[float]] = {}
    try:
        await wait_available(grpc_address)
        async with (
            grpc.aio.insecure_channel(grpc_address) as channel,
            httpx.AsyncClient(base_url=http_url, timeout=120) as http,
        ):
            await _grpc_stream(channel, 50)  # warm both paths up
            await _sse_stream(http, 50)
            await _unary_grpc(channel, 20)
            await _unary_http(http, 20)
            for _ in range(repeats):
                grpc_total, grpc_first = await _grpc_stream(channel, events)
                sse_total, sse_first = await _sse_stream(http, events)
                samples.setdefault("grpc events/s", []).append(events / grpc_total)
                samples.setdefault("sse events/s", []).append(events / sse_total)
                samples.setdefault("sse added us/event", []).append((sse_total - grpc_total) / events * 1e6)
                samples.setdefault("grpc first event", []).append(grpc_first * 1000)
                samples.setdefault("sse first event", []).append(sse_first * 1000)
            for _ in range(2 if quick else 4):
                samples.setdefault("grpc unary", []).extend(await _unary_grpc(channel, unary_count // 4))
                samples.setdefault("http unary", []).extend(await _unary_http(http, unary_count // 4))
    finally:
        for process in (backend, gateway):
            process.terminate()
            await process.wait()

    def stats(key: str) -> Stats:
        return Stats(tuple(samples[key]))

    rows = [
        Row.from_stats(
            NAME, f"grpc StreamChat {events} events", "events/s", stats("grpc events/s"), higher_is_better=True
        ),
        Row.from_stats(
            NAME,
            f"sse StreamChat {events} events",
            "events/s",
            stats("sse events/s"),
            higher_is_better=True,
            baseline=f"grpc StreamChat {events} events",
        ),
        Row.from_stats(NAME, "sse added time per event", "us", stats("sse added us/event")),
        Row.from_stats(NAME, "grpc time to first event", "ms", stats("grpc first event")),
        Row.from_stats(
            NAME, "sse time to first event", "ms", stats("sse first event"), baseline="grpc time to first event"
        ),
    ]
    grpc_unary_case = "grpc ListCapabilities requests/s, 1 at a time"
    for key, route in (("grpc unary", "grpc ListCapabilities"), ("http unary", "http GET /v1/capabilities")):
        per_second = Stats(tuple(1 / s for s in samples[key]))
        rows.append(
            Row.from_stats(
                NAME,
                f"{route} requests/s, 1 at a time",
                "req/s",
                per_second,
                higher_is_better=True,
                baseline=grpc_unary_case if key == "http unary" else "",
            )
        )
    added_ms = (statistics.median(samples["http unary"]) - statistics.median(samples["grpc unary"])) * 1000
    rows.append(Row(NAME, "http unary p50 added latency", "ms", added_ms, added_ms, 1))
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))

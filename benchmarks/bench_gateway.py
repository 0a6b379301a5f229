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
- unary p50 overhead: gateway p50 - direct p50 of Chat, one call at a time, <= 0.4 ms. A difference
  of two medians swings either way by more than the gateway costs on a busy machine, so it is
  shown per round with its min..max, each round's difference counted as 0 where the gateway side
  was the faster one (the case name says in how many rounds): no row claims a negative cost. Next
  to it, `gateway / direct unary p50 latency`, the ratio per round, which needs no clamping;
- unary calls/s with 16 calls in flight, >= 0.6 of direct;
- stream messages/s over 16 concurrent streams, >= 0.6 of direct;
- a cheap unary call (ListModels, which runs no model and so takes no capacity slot) from 64
  callers at once, >= 0.6 of direct calls/s with no RESOURCE_EXHAUSTED (every failed call is
  counted and shown).
Ratios swing with whatever else the machine runs; the gateway process's own CPU time per relayed
call or message (user + system, from /proc, Linux only) swings far less, so each case also shows
it: the figure to compare between two versions of the gateway on a shared machine.
A second gateway and backend hold a mesh secret, as every process of a `capmesh up` mesh does
(the backend refuses calls without it, so the direct side presents it too); its unary cases run in
the same rounds, and `mesh secret / none` compares the gateway's CPU per call with and without it.
That ratio holds two costs: the secret added to each backend call (per-call metadata: about
nothing; channel interceptors cost ~10 %) and the gateway checking its own callers' credentials,
which a gateway with a secret does on every call (gateway/auth).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn, wait_available
from capmesh.client.channel import Metadata
from capmesh.llm.v1 import llm_service_pb2
from capmesh.services.runtime.settings import MESH_SECRET_ENV
from capmesh.services.runtime.trust import mesh_metadata

NAME = "gateway"
CHAT = "/capmesh.llm.v1.LlmService/Chat"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"
LIST_MODELS = "/capmesh.llm.v1.LlmService/ListModels"
# The second pair's secret (`capmesh up` makes a random one); the suffix of that pair's rows.
MESH_SECRET = "bench-gateway-mesh-secret"
WITH_SECRET = ", mesh secret"


def _request(prompt: str, streaming: bool) -> bytes:
    message = llm_service_pb2.ChatMessage(role=llm_service_pb2.ROLE_USER, content=prompt)
    cls = llm_service_pb2.StreamChatRequest if streaming else llm_service_pb2.ChatRequest
    return cls(messages=[message]).SerializeToString()


# -- what a client worker measures (in its own process) ------------------------------------------
async def unary_latencies(channel: grpc.aio.Channel, count: int, metadata: Metadata = ()) -> list[float]:
    call, request, samples = channel.unary_unary(CHAT), _request("hello", False), []
    for _ in range(count):
        started = time.perf_counter()
        await call(request, metadata=metadata)
        samples.append(time.perf_counter() - started)
    return samples


async def unary_rate(channel: grpc.aio.Channel, count: int, concurrency: int) -> float:
    """Chat calls/s with `concurrency` calls in flight (bench_tracing and bench_xds use it too)."""
    return (await calls_rate(channel, CHAT, _request("hello", False), count, concurrency))["value"]


async def calls_rate(
    channel: grpc.aio.Channel, method: str, request: bytes, count: int, callers: int, metadata: Metadata = ()
) -> dict:
    """Calls/s of `callers` concurrent loops of `count // callers` calls, and failures by code."""
    call = channel.unary_unary(method)
    failures: dict[str, int] = {}

    async def caller(n: int) -> None:
        for _ in range(n):
            try:
                await call(request, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(count // callers) for _ in range(callers)))
    return {"value": (count // callers) * callers / (time.perf_counter() - started), "failures": failures}


async def _stream_rate(channel: grpc.aio.Channel, streams: int, messages: int, metadata: Metadata = ()) -> float:
    call, request = channel.unary_stream(STREAM_CHAT), _request(f"n:{messages}", True)

    async def one() -> int:
        received = 0
        stream = call(request, metadata=metadata)
        while await stream.read() is not grpc.aio.EOF:
            received += 1
        return received

    started = time.perf_counter()
    received = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return received / (time.perf_counter() - started)


async def _client_worker(address: str) -> None:
    """`python -m benchmarks.bench_gateway ADDRESS`: answers the runner's requests for measurements.
    With `CAPMESH_MESH_SECRET` set (the direct side of a mesh with a secret), every call presents it,
    in its own metadata as the gateway does."""
    secret = mesh_metadata(os.environ.get(MESH_SECRET_ENV, ""))
    async with grpc.aio.insecure_channel(address) as channel:

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            case, n = request["case"], request["n"]
            if case == "latency":
                return {"value": statistics.median(await unary_latencies(channel, n, secret)) * 1000}
            if case == "unary":
                return await calls_rate(channel, CHAT, _request("hello", False), n, request["callers"], secret)
            if case == "cheap":
                return await calls_rate(channel, LIST_MODELS, b"", n, request["callers"], secret)
            if case == "stream":
                return {"value": await _stream_rate(channel, request["streams"], n, secret)}
            raise ValueError(f"unknown case {case!r}")

        await unary_latencies(channel, 200, secret)  # warm the channel and both processes up
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


@dataclass(frozen=True)
class _Pair:
    """One gateway with its backend, the two sides that call them, and the cases asked of them
    (their names carry the pair's suffix)."""

    workers: dict[str, Worker]  # "direct" and "gateway"
    gateway_pid: int
    cases: list[Case]


async def _rounds(pairs: list[_Pair], rounds: int) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """Each pair's cases `rounds` times on both sides, the first side (and the first pair)
    alternating: samples by (side, case), the gateway's CPU microseconds per relayed call or
    message by ("cpu", case), and the failed calls by side and status code."""
    samples: dict[tuple[str, str], list[float]] = {}
    failures: dict[str, int] = {}
    for round_ in range(rounds):
        for pair in pairs if round_ % 2 == 0 else pairs[::-1]:
            sides = list(pair.workers)
            for case, _, request in pair.cases:
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    cpu = _cpu_seconds(pair.gateway_pid)
                    reply = await pair.workers[side].ask(request)
                    if side == "gateway":
                        used = _cpu_seconds(pair.gateway_pid) - cpu
                        samples.setdefault(("cpu", case), []).append(used / _operations(request) * 1e6)
                    samples.setdefault((side, case), []).append(reply["value"])
                    for code, count in reply.get("failures", {}).items():
                        failures[f"{side} {code}"] = failures.get(f"{side} {code}", 0) + count
    return samples, failures


def _overhead_row(case: str, gateway: list[float], direct: list[float]) -> Row:
    """The gateway's added p50 per round, with its spread. A round where the gateway side came out
    faster measured noise, not a negative cost: it counts as 0, and the case name says how often."""
    differences = [g - d for g, d in zip(gateway, direct, strict=True)]
    below = sum(d < 0 for d in differences)
    note = f", {below} of {len(differences)} rounds below 0 counted as 0" if below else ""
    return Row.from_samples(
        NAME, f"gateway {case} overhead, per round{note} (goal <= 0.4)", "ms", [max(0.0, d) for d in differences]
    )


async def _measure(quick: bool) -> list[Row]:
    untraced = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with_secret = {**untraced, MESH_SECRET_ENV: MESH_SECRET}
    processes: list[asyncio.subprocess.Process] = []
    workers: list[Worker] = []
    pairs: list[_Pair] = []
    cases = _cases(quick)
    # The pair with a secret runs the unary cases: its rows against the plain pair's show the cost.
    secret_cases = [(f"{case}{WITH_SECRET}", unit, request) for case, unit, request in cases[:2]]
    try:
        for env, pair_cases in ((untraced, cases), (with_secret, secret_cases)):
            # The default capacity (4 model slots): Chat and StreamChat beyond it wait in the
            # backend's line (which the echo backend serves at once), and ListModels is not counted.
            started, gateway_address, backend_address = await start_pair(env, max_concurrency=4)
            processes.extend(started)
            sides: dict[str, Worker] = {}
            # Only the direct side presents the secret: the gateway's callers are its clients.
            for side, address, side_env in (("direct", backend_address, env), ("gateway", gateway_address, untraced)):
                sides[side] = await Worker.start("benchmarks.bench_gateway", address, env=side_env)
                workers.append(sides[side])
            pairs.append(_Pair(sides, started[-1].pid, pair_cases))
        samples, failures = await _rounds(pairs, 3 if quick else 7)
    finally:
        for worker in workers:
            await worker.stop()
        for process in processes:
            process.terminate()
            await process.wait()

    rows = []
    for case, unit, _ in [*cases, *secret_cases]:
        direct, gateway = samples[("direct", case)], samples[("gateway", case)]
        higher = unit != "ms"
        rows.append(Row.from_samples(NAME, f"direct {case}", unit, direct, higher_is_better=higher))
        rows.append(
            Row.from_samples(NAME, f"gateway {case}", unit, gateway, higher_is_better=higher, baseline=f"direct {case}")
        )
        if higher:
            rows.append(ratio_row(NAME, f"gateway / direct {case} (goal >= 0.6)", gateway, direct))
        else:
            rows.append(ratio_row(NAME, f"gateway / direct {case}", gateway, direct, higher_is_better=False))
            rows.append(_overhead_row(case, gateway, direct))
        if not any(math.isnan(cpu) for cpu in samples[("cpu", case)]):
            per = "message" if "stream" in case else "call"
            rows.append(Row.from_samples(NAME, f"gateway CPU per {per}, {case}", "us", samples[("cpu", case)]))
    for case, _, _ in cases[:2]:
        cpu, cpu_with_secret = samples[("cpu", case)], samples[("cpu", f"{case}{WITH_SECRET}")]
        if not any(math.isnan(c) for c in cpu):
            rows.append(
                ratio_row(NAME, f"gateway CPU per call, {case}: mesh secret / none", cpu_with_secret, cpu, False)
            )
    refused = failures.get("gateway RESOURCE_EXHAUSTED", 0)
    failed = sum(failures.values())
    rows.append(Row(NAME, "gateway calls refused with RESOURCE_EXHAUSTED (goal 0)", "calls", refused, refused, 1))
    rows.append(Row(NAME, "failed calls, any code, both sides (expected 0)", "calls", failed, failed, 1))
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    asyncio.run(_client_worker(sys.argv[1]))

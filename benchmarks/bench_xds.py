"""Proxyless xDS clients against a direct channel to the backend, one run.

Five processes: the gateway (`capmesh gateway`, also the xDS server), one echo backend registered
with it (tests/gateway/backends.py, which answers at once, so the figures are the path's own cost),
and one client process per path (`python -m benchmarks.bench_xds --client PATH ...`), so that no
path shares an interpreter, an event loop or a gRPC core with another. The paths dial the same
backend: `direct` by its address (the baseline); `xds` through `xds:///echo` (gRPC's xDS client
learns the backend from the gateway's ADS, then calls it directly); and `gateway` through the
gateway's proxy, for comparison. Each round asks every client process for every case in turn, each
round starting with another path, so that all see the same machine load.

Rows: each path's rate per case (median and min..max of the rounds), and `xds / direct` and
`gateway / direct` per case: the ratio taken within each round, then its median and spread. On a
busy machine those swing with the neighbours' load; `xds / direct client CPU` (the client
process's CPU time per call or message, per round) is the steadier measure of what the xDS client
adds to the caller.

Goal: the xDS path keeps >= 0.95 of the direct channel's calls/s and stream messages/s.

    python -m benchmarks.run xds [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from benchmarks.bench_gateway import _stream_rate, start_pair, unary_latencies, unary_rate
from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests

NAME = "xds"
PATHS = ("direct", "xds", "gateway")
CASES = ("unary calls/s, 16 in flight", "stream msgs/s, 1 stream", "stream msgs/s, 16 streams")


def _case(name: str, quick: bool) -> Callable[[grpc.aio.Channel], Awaitable[float]]:
    """One measurement of case `name` on a channel: its rate."""
    if name == CASES[0]:
        return lambda channel: unary_rate(channel, 800 if quick else 3200, 16)
    if name == CASES[1]:
        return lambda channel: _stream_rate(channel, 1, 2000 if quick else 10000)
    return lambda channel: _stream_rate(channel, 16, 200 if quick else 1000)


async def _client(path: str, target: str, gateway: str, quick: bool) -> None:
    """One path's client process: answers `{"case": NAME}` with `{"rate": R, "cpu_per_k": C}`, C its
    own CPU seconds per 1000 calls or messages."""
    from capmesh.client.channel import aio_channel
    from capmesh.client.xds import use_gateway_xds

    if path == "xds":
        use_gateway_xds(gateway, "capmesh-bench")  # before the process's first xds: channel
    async with aio_channel(target, api_key="") as channel:
        await unary_latencies(channel, 200)  # connect and warm the path up

        async def measure(request: dict[str, Any]) -> dict[str, Any]:
            cpu, started = time.process_time(), time.perf_counter()
            rate = await _case(request["case"], quick)(channel)
            count = rate * (time.perf_counter() - started)
            return {"rate": rate, "cpu_per_k": (time.process_time() - cpu) * 1000 / count}

        await serve_requests(measure)


async def _measure(quick: bool) -> list[Row]:
    quick_flag = ["--quick"] if quick else []
    processes: list[asyncio.subprocess.Process] = []
    clients: dict[str, Worker] = {}
    rates: dict[str, list[float]] = {f"{path} {case}": [] for path in PATHS for case in CASES}
    cpu: dict[str, list[float]] = {f"{path} {case}": [] for path in PATHS for case in CASES}
    try:
        processes, gateway_address, backend_address = await start_pair(dict(os.environ), max_concurrency=512)
        targets = {"direct": backend_address, "xds": "xds:///echo", "gateway": gateway_address}
        for path in PATHS:
            args = ["--client", path, "--target", targets[path], "--gateway", gateway_address, *quick_flag]
            clients[path] = await Worker.start("benchmarks.bench_xds", *args)
        for round_ in range(5 if quick else 11):
            order = PATHS[round_ % len(PATHS) :] + PATHS[: round_ % len(PATHS)]  # no path always goes first
            for case in CASES:
                for path in order:
                    reply = await clients[path].ask({"case": case})
                    rates[f"{path} {case}"].append(reply["rate"])
                    cpu[f"{path} {case}"].append(reply["cpu_per_k"])
    finally:
        for client in clients.values():
            await client.stop()
        for process in processes:
            process.terminate()
            await process.wait()
    rows = [
        Row.from_samples(
            NAME,
            f"{path} {case}",
            case.split(",")[0].split()[-1],
            rates[f"{path} {case}"],
            higher_is_better=True,
            baseline=f"direct {case}" if path != "direct" else "",
        )
        for case in CASES
        for path in PATHS
    ]
    for path in PATHS[1:]:
        rows += [
            ratio_row(NAME, f"{path} / direct {case}", rates[f"{path} {case}"], rates[f"direct {case}"])
            for case in CASES
        ]
    # What the xDS client itself costs the caller, whatever else runs on the machine.
    rows += [
        ratio_row(NAME, f"xds / direct client CPU per item, {case}", cpu[f"xds {case}"], cpu[f"direct {case}"], False)
        for case in CASES
    ]
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one path's client process (see the module docstring)")
    parser.add_argument("--client", choices=PATHS, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    asyncio.run(_client(options.client, options.target, options.gateway, options.quick))

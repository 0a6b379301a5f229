"""Proxyless xDS clients against a direct channel to the backend, one run.

Three processes: the gateway (`capmesh gateway`, also the xDS server), one echo backend registered
with it (tests/gateway/backends.py, which answers at once, so the figures are the path's own cost),
and this client. The client dials the same backend three ways: directly by its address; through
`xds:///echo` (gRPC's xDS client learns the backend from the gateway's ADS, then calls it
directly); and through the gateway's proxy, for comparison. Each round measures every path in
turn (each round starting with another), so that all see the same machine load; each row is the
median of the rounds.

Goal: the xDS path keeps >= 0.95 of the direct channel's calls/s and stream messages/s.

    python -m benchmarks.run xds [--quick]
"""

from __future__ import annotations

import asyncio

from benchmarks.bench_gateway import _stream_rate, unary_latencies, unary_rate
from benchmarks.harness import Row, Stats
from benchmarks.processes import spawn, wait_available
from capmesh.client.channel import aio_channel
from capmesh.client.xds import use_gateway_xds

NAME = "xds"
PATHS = ("direct", "xds", "gateway")


async def _measure(quick: bool) -> list[Row]:
    gateway, banner = await spawn(
        ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", "--set", "log_level=warning"],
        " listening on ",
    )
    gateway_address = banner.split(" grpc ", 1)[1].split()[0]
    backend, banner = await spawn(
        ["-m", "tests.gateway.backend_process", "bench", "--gateway", gateway_address, "--max-concurrency", "512"],
        " listening on ",
    )
    backend_address = banner.split(" listening on ", 1)[1].strip()
    use_gateway_xds(gateway_address, "capmesh-bench")  # before the process's first xds: channel
    rates: dict[str, list[float]] = {}
    cases = [
        ("unary calls/s, 16 in flight", lambda ch: unary_rate(ch, 800 if quick else 3200, 16)),
        ("stream msgs/s, 1 stream", lambda ch: _stream_rate(ch, 1, 2000 if quick else 10000)),
        ("stream msgs/s, 16 streams", lambda ch: _stream_rate(ch, 16, 200 if quick else 1000)),
    ]
    try:
        await wait_available(gateway_address)
        async with (
            aio_channel(backend_address, api_key="") as direct,
            aio_channel("xds:///echo") as xds,
            aio_channel(gateway_address, api_key="") as via_gateway,
        ):
            channels = dict(zip(PATHS, (direct, xds, via_gateway), strict=True))
            for channel in channels.values():
                await unary_latencies(channel, 200)  # connect and warm every path up
            for round_ in range(3 if quick else 9):
                order = PATHS[round_ % len(PATHS) :] + PATHS[: round_ % len(PATHS)]  # no path always goes first
                for case, measure in cases:
                    for path in order:
                        rates.setdefault(f"{path} {case}", []).append(await measure(channels[path]))
    finally:
        for process in (backend, gateway):
            process.terminate()
            await process.wait()
    return [
        Row.from_stats(
            NAME,
            f"{path} {case}",
            case.split(",")[0].split()[-1],
            Stats(tuple(rates[f"{path} {case}"])),
            higher_is_better=True,
            baseline=f"direct {case}" if path != "direct" else "",
        )
        for case, _ in cases
        for path in PATHS
    ]


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))

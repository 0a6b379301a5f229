"""What tracing costs on the proxied unary path: off (the default) must cost nothing measurable.

Four pairs of processes, a gateway and one echo backend registered with it (as in bench_gateway:
the backend answers at once, so the figures are the relay's own), each pair started with its own
environment, and this client; with tracing on, the spans go to a collector in a process of its own
(`python -m tests.telemetry.collector`), so that decoding them slows no measured client:
- `off` and `off again`: two identical pairs without OTEL_* variables. What separates them is this
  machine's noise: a cost smaller than that is not measurable here;
- `on, unsampled`: OTEL_EXPORTER_OTLP_ENDPOINT set with OTEL_TRACES_SAMPLER=always_off (the SDK,
  its interceptors and the propagation run; no span is recorded);
- `on`: every call traced and exported (root spans: the client sends no traceparent).

Every round runs every pair, in an order rotated each round so that the machine's changing load
weighs on all alike: `per_round` sequential unary calls, then unary calls/s with 16 in flight. Rows:
- `<pair> unary latency`: median and p99 of all its calls (µs);
- `<pair> - off unary p50, per round`: the difference of the two medians taken within each round,
  median and p99 over the rounds, with their interquartile range (the spread) in the case;
- `<pair> unary calls/s, 16 in flight` and its ratio to `off` per round;
- `tracing-off hooks per proxied call`: what tracing leaves on the path while off, timed here in
  process — `telemetry.current_context()` and the routing attempt's span check, once per call (no
  interceptor, middleware or log processor is installed while off). Removing the telemetry code
  would save this much and nothing else, so there is no build without it to compare with.

    python -m benchmarks.run tracing [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import timeit
from types import SimpleNamespace

import grpc

from benchmarks.bench_gateway import start_pair, unary_latencies, unary_rate
from benchmarks.harness import Row, Stats, percentile
from benchmarks.processes import spawn
from capmesh.gateway.server.routing.call import BackendCall
from capmesh.services.runtime import telemetry

NAME = "tracing"
OFF = "off"
IN_FLIGHT = 16


def _environments(collector_endpoint: str) -> dict[str, dict[str, str]]:
    off = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    on = {**off, "OTEL_EXPORTER_OTLP_ENDPOINT": collector_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    return {OFF: off, "off again": off, "on, unsampled": {**on, "OTEL_TRACES_SAMPLER": "always_off"}, "on": on}


def _hook_seconds(loops: int) -> float:
    """Seconds per proxied call of the hooks that stay on the path while tracing is off."""
    assert not telemetry.enabled(), "this process must not trace"
    attempt_span = BackendCall._attempt_span
    call = SimpleNamespace(_trace_parent=telemetry.current_context())

    def hooks() -> None:
        call._trace_parent = telemetry.current_context()  # BackendCall.__init__
        span = attempt_span(call, 1, 0.0)  # each routing attempt (the namespace stands in for the call)
        if span is not None:  # its metadata and its end
            raise AssertionError("a span while tracing is off")

    return timeit.timeit(hooks, number=loops) / loops


async def _measure(quick: bool) -> list[Row]:
    rounds, per_round, rate_calls = (4, 100, 800) if quick else (12, 300, 1600)
    collector, banner = await spawn(["-m", "tests.telemetry.collector"], "collector listening on ")
    processes: list[asyncio.subprocess.Process] = []
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        for pair, env in _environments(f"http://{banner.rsplit(' ', 1)[1]}").items():
            started, address, _ = await start_pair(env)
            processes += started
            channels[pair] = grpc.aio.insecure_channel(address)
        for channel in channels.values():
            await unary_latencies(channel, 200)  # warm every path up
        latencies: dict[str, list[list[float]]] = {pair: [] for pair in channels}
        rates: dict[str, list[float]] = {pair: [] for pair in channels}
        pairs = list(channels)
        for index in range(rounds):
            order = pairs[index % len(pairs) :] + pairs[: index % len(pairs)]
            for pair in order:
                latencies[pair].append(await unary_latencies(channels[pair], per_round))
            for pair in order:
                rates[pair].append(await unary_rate(channels[pair], rate_calls, IN_FLIGHT))
    finally:
        for channel in channels.values():
            await channel.close()
        for process in processes:
            process.terminate()
            await process.wait()  # a traced process exports its last spans as it exits
        collector.terminate()
        tail = (await collector.stdout.read()).decode() if collector.stdout else ""
        await collector.wait()
    spans = next((line.split()[2] for line in tail.splitlines() if line.startswith("collector received")), "?")
    hooks = Stats(tuple(_hook_seconds(100_000) for _ in range(5 if quick else 15)))
    off_hooks = Row.from_stats(
        NAME, "tracing-off hooks per proxied call", "µs", hooks, scale=1e6, baseline=f"{OFF} unary latency"
    )
    return [*_rows(latencies, rates, spans), off_hooks]


def _rows(latencies: dict[str, list[list[float]]], rates: dict[str, list[float]], spans: str) -> list[Row]:
    rows = []
    for pair, per_round in latencies.items():
        samples = Stats(tuple(s for block in per_round for s in block))
        baseline = f"{OFF} unary latency" if pair != OFF else ""
        rows.append(Row.from_stats(NAME, f"{pair} unary latency", "µs", samples, scale=1e6, baseline=baseline))
    off_p50 = [statistics.median(block) for block in latencies[OFF]]
    for pair, per_round in latencies.items():
        if pair == OFF:
            continue
        differences = [(statistics.median(block) - base) * 1e6 for block, base in zip(per_round, off_p50)]
        low, high = percentile(differences, 25), percentile(differences, 75)
        label = f"{pair} ({spans} spans exported)" if pair == "on" else pair
        rows.append(
            Row.from_stats(
                NAME,
                f"{label} - off unary p50, per round (IQR {low:+.1f}..{high:+.1f})",
                "µs",
                Stats(tuple(differences)),
            )
        )
    case = f"unary calls/s, {IN_FLIGHT} in flight"
    for pair, samples in rates.items():
        rows.append(
            Row.from_stats(
                NAME,
                f"{pair} {case}",
                "calls/s",
                Stats(tuple(samples)),
                baseline=f"{OFF} {case}" if pair != OFF else "",
                higher_is_better=True,
            )
        )
    for pair, samples in rates.items():
        if pair != OFF:
            ratios = [a / b for a, b in zip(samples, rates[OFF])]
            rows.append(Row.from_stats(NAME, f"{pair} / off calls/s, per round", "x", Stats(tuple(ratios))))
    return rows


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))

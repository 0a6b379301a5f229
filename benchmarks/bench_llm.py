"""LLM: continuous batching and gRPC streaming overhead on the tiny checkpoint.

    .venv/bin/python -m benchmarks.run llm [--quick]

- `sequential`: the 16 requests below, one StreamChat at a time: aggregate tokens/s (the baseline).
- `concurrent xN` (N = 1, 4, 8, 16): N StreamChat calls at once, aggregate tokens/s per round.
- `ttft xN`: time to the first text delta of each call in those rounds (median and p99), ms.
- `in-process concurrent x1 / x8` and `in-process ttft x1 / x8`: the same requests through the
  engine's `stream()`, no gRPC, in a fresh process of its own (`python -m benchmarks.bench_llm
  --in-process`, which loads the same engine with the server's settings), so that neither side
  shares an interpreter with the other or with this client. Each round runs the gRPC and the
  in-process case of a level as A B B A (A: gRPC in even rounds, in-process in odd ones), each
  side's figure the mean of its two runs.
- `speedup xN ... per round` and `grpc / in-process xN, per round`: ratios taken within each
  round (all cases run in every round), then their median and spread: robust to the machine's
  load drifting (target: grpc / in-process x8 >= 0.95).
- `server CPU xN` / `in-process CPU xN` and their ratio per round: CPU seconds per 1000 tokens of
  the server process (engine, gRPC and all) and of the in-process worker (engine and consumers).
  On a busy machine the rates swing with the neighbours' load; CPU time mostly does not, so this
  is the steadier measure of what the gRPC path itself costs.
- `json schema xN` (N = 1, 8): the same calls with `response_format` set to an outline-shaped JSON
  Schema (constrained decoding), run right after the free-text `concurrent xN` of each round;
  `json schema / free xN, per round` is the cost of the grammar masks (target: >= 0.85 at x8).
  The schema's strings are long enough that answers still run to max_tokens, as free ones do.
- `logprobs x8`, `penalties x8`, `logprobs + penalties x8`: the x8 calls with `logprobs` and
  `top_logprobs=5`, with presence, frequency and repetition penalties and a `logit_bias`, and with
  both, run right after the free-text `concurrent x8` of each round; `... / free x8, per round` is
  their cost. Penalties change the answers, so the rows compare tokens/s, not answers; the bias is
  small, so answers still run to max_tokens.
- `schema compile, first / cached`: compiling a schema not seen before, then the same schema
  again (the per-model cache), against the tiny vocabulary, ms.

The server runs in its own process (`capmesh serve llm`), as in production, so that the client's
own work does not share the server's interpreter. Every request is greedy with max_tokens=256.
Every row shows the spread (min..max) of its rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import psutil

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn

BENCHMARK = "llm"
MAX_TOKENS = 256
CONCURRENCY = (1, 4, 8, 16)
IN_PROCESS = (1, 8)
SCHEMA_CONCURRENCY = (1, 8)
OPTIONS_CONCURRENCY = 8
LOGPROBS = {"logprobs": True, "top_logprobs": 5}
PENALTIES = {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1, "logit_bias": {7: 1.0}}
VARIANTS: dict[str, dict[str, Any]] = {
    "logprobs": LOGPROBS,
    "penalties": PENALTIES,
    "logprobs + penalties": {**LOGPROBS, **PENALTIES},
}
OUTLINE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 64},
        "sections": {
            "type": "array",
            "minItems": 2,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 48},
                    "summary": {"type": "string", "maxLength": 160},
                },
                "required": ["title", "summary"],
            },
        },
    },
    "required": ["title", "sections"],
}
SERVER_SETTINGS = {"max_batch_size": "16", "max_waiting": "64", "log_level": "warning", "eager_load": "true"}
SERVER_ENV = {**os.environ, "CAPMESH_LLM_LOG_JSON": "true"}  # the server's and the in-process worker's


def run(quick: bool) -> list[Row]:
    rounds = 2 if quick else 7
    return asyncio.run(_run(rounds))


async def _run(rounds: int) -> list[Row]:
    from capmesh.client import aio_channel

    server, address = await _start_server()
    worker: Worker | None = None
    try:
        worker = await Worker.start("benchmarks.bench_llm", "--in-process", env=SERVER_ENV)
        async with aio_channel(address) as channel:
            over_grpc = _grpc_caller(channel)
            with_schema = _grpc_caller(channel, json.dumps(OUTLINE_SCHEMA))
            variants = {label: _grpc_caller(channel, **options) for label, options in VARIANTS.items()}
            for call in (over_grpc, with_schema, *variants.values()):
                await asyncio.gather(*(call(i) for i in range(16)))  # warm-up (the worker warms itself)
            server_cpu = _cpu_of(server.pid)
            rows = await _measure(over_grpc, with_schema, server_cpu, worker, variants, rounds)
            return rows + _compile_times(rounds)
    finally:
        if worker is not None:
            await worker.stop()
        server.terminate()
        await server.wait()


def _cpu_of(pid: int):
    """A function that reads the CPU seconds process `pid` has used so far (all its threads)."""
    process = psutil.Process(pid)

    def seconds() -> float:
        times = process.cpu_times()
        return times.user + times.system

    return seconds


def _prompt(i: int) -> str:
    return f"Request number {i}: " + "tell me more " * (i % 5)


async def _start_server() -> tuple[asyncio.subprocess.Process, str]:
    args = ["-c", "from capmesh.cli.main import app; app()", "serve", "llm", "--port", "0", "--model", "tiny"]
    for key, value in SERVER_SETTINGS.items():
        args += ["--set", f"{key}={value}"]
    # The server prints one line with its address once it serves.
    server, banner = await spawn(args, "listening on", SERVER_ENV)
    return server, banner.rsplit(" ", 1)[-1]


def _grpc_caller(channel, schema: str = "", **options):
    """One StreamChat call: (seconds to the first delta, completion tokens); `schema` constrains it,
    `options` are more StreamChatRequest fields (logprobs, penalties)."""
    from capmesh.llm.v1 import llm_service_pb2 as pb
    from capmesh.llm.v1 import llm_service_pb2_grpc

    stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    async def one(i: int) -> tuple[float, int]:
        request = pb.StreamChatRequest(
            messages=[pb.ChatMessage(role=pb.ROLE_USER, content=_prompt(i))],
            temperature=0.0,
            max_tokens=MAX_TOKENS,
            response_format=pb.ResponseFormat(json_schema=schema) if schema else None,
            **options,
        )
        started = time.perf_counter()
        first = None
        async for message in stub.StreamChat(request):
            if first is None and message.WhichOneof("event") == "chunk":
                first = time.perf_counter() - started
            if message.WhichOneof("event") == "result":
                return first or 0.0, message.result.usage.completion_tokens
        raise RuntimeError("the stream ended without a result")

    return one


async def _in_process_engine():
    from capmesh.services.llm.batching import TransformersChatEngine
    from capmesh.services.llm.config import LlmSettings
    from capmesh.services.runtime.logging import configure_logging
    from capmesh.services.runtime.settings import load_settings

    # The server's settings, read the way `capmesh serve llm --set ...` reads them.
    settings = load_settings(LlmSettings, "llm", {"model": "tiny", **SERVER_SETTINGS})
    configure_logging(settings.log_level, settings.log_json)  # as quiet as the server, for a fair comparison
    engine = TransformersChatEngine(settings)
    await asyncio.to_thread(engine.load)
    return engine


def _in_process_caller(engine):
    """The same request through the engine's own async stream, no gRPC."""
    from capmesh.services.llm.domain import ChatMessage, ChatRequest, ChatResult, TextDelta
    from capmesh.services.runtime.cancellation import CancelToken

    async def one(i: int) -> tuple[float, int]:
        request = ChatRequest([ChatMessage("user", _prompt(i))], temperature=0.0, max_tokens=MAX_TOKENS)
        started = time.perf_counter()
        first = None
        async for event in engine.stream(request, CancelToken.never()):
            if isinstance(event, ChatResult):
                return first or 0.0, event.completion_tokens
            if first is None and isinstance(event, TextDelta):
                first = time.perf_counter() - started
        raise RuntimeError("the stream ended without a result")

    return one


async def _in_process_worker() -> None:
    """The in-process baseline's own process: runs `{"n": N}` concurrent calls per request and
    answers their aggregate tokens/s and times to the first delta (ms)."""
    engine = await _in_process_engine()
    call = _in_process_caller(engine)
    await asyncio.gather(*(call(i) for i in range(16)))  # warm-up, as the gRPC side's

    async def concurrent(request: dict) -> dict:
        cpu = time.process_time()  # every thread of this process: the engine's and the consumers'
        rate, ttfts, tokens = await _concurrent(call, request["n"])
        return {"rate": rate, "ttfts": ttfts, "cpu": time.process_time() - cpu, "tokens": tokens}

    try:
        await serve_requests(concurrent)
    finally:
        await asyncio.to_thread(engine.close)


async def _concurrent(call, n: int) -> tuple[float, list[float], int]:
    """`n` calls at once: (aggregate tokens/s, each call's time to its first delta in ms, tokens)."""
    started = time.perf_counter()
    results = await asyncio.gather(*(call(i) for i in range(n)))
    tokens = sum(tokens for _, tokens in results)
    return tokens / (time.perf_counter() - started), [first * 1000 for first, _ in results], tokens


async def _measure(over_grpc, with_schema, server_cpu, in_process: Worker, variants, rounds: int) -> list[Row]:
    """Every round runs every case, so that the machine's changing load weighs on all alike; the
    `... per round` rows are medians of ratios taken within one round. `server_cpu()` is the
    server process's CPU seconds so far."""
    rates: dict[str, list[float]] = defaultdict(list)
    ttfts: dict[str, list[float]] = defaultdict(list)
    cpu_per_k: dict[str, list[float]] = defaultdict(list)
    for round_ in range(rounds):
        started = time.perf_counter()
        tokens = sum([(await over_grpc(i))[1] for i in range(16)])
        rates["sequential"].append(tokens / (time.perf_counter() - started))
        for n in CONCURRENCY:
            # Against the in-process side: A B B A, each side's figure the mean of its two runs, so
            # that a load drifting steadily through the round weighs on both alike; A is gRPC in
            # even rounds and the in-process side in odd ones.
            sides = ["grpc", "in-process", "in-process", "grpc"] if n in IN_PROCESS else ["grpc"]
            if round_ % 2:
                sides.reverse()
            runs: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (tokens/s, CPU s/1k tokens)
            for side in sides:
                if side == "grpc":
                    cpu = server_cpu()
                    rate, firsts, tokens = await _concurrent(over_grpc, n)
                    cpu = server_cpu() - cpu
                    case = f"x{n}"
                else:
                    reply = await in_process.ask({"n": n})
                    rate, firsts, cpu, tokens = reply["rate"], reply["ttfts"], reply["cpu"], reply["tokens"]
                    case = f"in-process x{n}"
                runs[case].append((rate, cpu * 1000 / tokens))
                ttfts[case].extend(firsts)
            for case, figures in runs.items():
                rates[case].append(statistics.fmean(rate for rate, _ in figures))
                cpu_per_k[case].append(statistics.fmean(cpu for _, cpu in figures))
            if n in SCHEMA_CONCURRENCY:  # right after the free run: the same load
                rates[f"json schema x{n}"].append((await _concurrent(with_schema, n))[0])
            if n == OPTIONS_CONCURRENCY:
                for variant, call_variant in variants.items():
                    rates[f"{variant} x{n}"].append((await _concurrent(call_variant, n))[0])
    rows = [_row("sequential", "tokens/s", rates["sequential"])]
    for n in CONCURRENCY:
        rows.append(_row(f"concurrent x{n}", "tokens/s", rates[f"x{n}"], baseline="sequential"))
        rows.append(_row(f"ttft x{n}", "ms", ttfts[f"x{n}"], higher_is_better=False))
    for n in IN_PROCESS:
        baseline = f"concurrent x{n}"
        rows.append(_row(f"in-process concurrent x{n}", "tokens/s", rates[f"in-process x{n}"], baseline=baseline))
        rows.append(_row(f"in-process ttft x{n}", "ms", ttfts[f"in-process x{n}"], higher_is_better=False))
        for side, case in (("server", f"x{n}"), ("in-process", f"in-process x{n}")):
            rows.append(_row(f"{side} CPU x{n}", "CPU s/1k tokens", cpu_per_k[case], higher_is_better=False))
    for n in SCHEMA_CONCURRENCY:
        rows.append(_row(f"json schema x{n}", "tokens/s", rates[f"json schema x{n}"], baseline=f"concurrent x{n}"))
    n = OPTIONS_CONCURRENCY
    for variant in variants:
        rows.append(_row(f"{variant} x{n}", "tokens/s", rates[f"{variant} x{n}"], baseline=f"concurrent x{n}"))
    # Ratios of two rates measured in the same round: (case, numerator, denominator) per concurrency.
    ratios = [
        *((f"speedup x{n} vs sequential", f"x{n}", "sequential") for n in CONCURRENCY),
        *((f"grpc / in-process x{n}", f"x{n}", f"in-process x{n}") for n in IN_PROCESS),
        *((f"json schema / free x{n}", f"json schema x{n}", f"x{n}") for n in SCHEMA_CONCURRENCY),
        *((f"{v} / free x{n}", f"{v} x{n}", f"x{n}") for v in variants),
    ]
    for case, numerator, denominator in ratios:
        rows.append(ratio_row(BENCHMARK, case, rates[numerator], rates[denominator]))
    for n in IN_PROCESS:  # CPU time is what the serving path costs, whatever else runs on the machine
        cases = (f"x{n}", f"in-process x{n}")
        server, alone = (cpu_per_k[case] for case in cases)
        rows.append(ratio_row(BENCHMARK, f"server CPU / in-process CPU x{n}", server, alone, higher_is_better=False))
    return rows


def _compile_times(rounds: int) -> list[Row]:
    """Compiling a new schema, then the same one again, with the server's per-model cache."""
    from transformers import AutoTokenizer

    from capmesh.services.llm.constraints import Grammars
    from capmesh.services.llm.domain import ResponseFormat
    from capmesh.services.llm.tiny import tiny_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_path())
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    first: list[float] = []
    cached: list[float] = []
    for i in range(rounds):
        # A schema no round has seen: a new description changes its text, hence its cache key.
        fmt = ResponseFormat("json_schema", json.dumps({**OUTLINE_SCHEMA, "description": f"round {i}"}))
        for samples in (first, cached):
            started = time.perf_counter()
            grammars.compile(fmt)
            samples.append((time.perf_counter() - started) * 1000)
    return [
        _row("schema compile, first", "ms", first, higher_is_better=False),
        _row("schema compile, cached", "ms", cached, higher_is_better=False),
    ]


def _row(case: str, unit: str, samples: list[float], baseline: str = "", higher_is_better: bool = True) -> Row:
    return Row.from_samples(BENCHMARK, case, unit, samples, baseline=baseline, higher_is_better=higher_is_better)


if __name__ == "__main__" and sys.argv[1:] == ["--in-process"]:
    asyncio.run(_in_process_worker())

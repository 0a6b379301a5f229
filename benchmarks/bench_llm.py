"""LLM: continuous batching and gRPC streaming overhead on the tiny checkpoint.

    .venv/bin/python -m benchmarks.run llm [--quick]

- `sequential`: the 16 requests below, one StreamChat at a time: aggregate tokens/s (the baseline).
- `concurrent xN` (N = 1, 4, 8, 16): N StreamChat calls at once, aggregate tokens/s per round.
- `ttft xN`: time to the first text delta of each call in those rounds (median and p99), ms.
- `in-process concurrent x1 / x8`: the same requests through the engine's `stream()` in this
  process, no gRPC.
- `speedup xN ... per round` and `grpc / in-process xN, per round`: ratios taken within each
  round (all cases run in every round), then their median: robust to the machine's load drifting.
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
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from benchmarks.harness import Row, percentile

BENCHMARK = "llm"
MAX_TOKENS = 256
CONCURRENCY = (1, 4, 8, 16)
IN_PROCESS = (1, 8)
SCHEMA_CONCURRENCY = (1, 8)
OPTIONS_CONCURRENCY = 8
LOGPROBS = {"logprobs": True, "top_logprobs": 5}
PENALTIES = {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1, "logit_bias": {7: 1.0}}
VARIANTS = {"logprobs": LOGPROBS, "penalties": PENALTIES, "logprobs + penalties": {**LOGPROBS, **PENALTIES}}
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


def run(quick: bool) -> list[Row]:
    rounds = 2 if quick else 7
    return asyncio.run(_run(rounds))


async def _run(rounds: int) -> list[Row]:
    from capmesh.client import aio_channel

    server, address = _start_server()
    engine = await _in_process_engine()
    try:
        async with aio_channel(address) as channel:
            over_grpc = _grpc_caller(channel)
            with_schema = _grpc_caller(channel, json.dumps(OUTLINE_SCHEMA))
            in_process = _in_process_caller(engine)
            variants = {label: _grpc_caller(channel, **options) for label, options in VARIANTS.items()}
            for call in (over_grpc, with_schema, in_process, *variants.values()):
                await asyncio.gather(*(call(i) for i in range(16)))  # warm-up
            rows = await _measure(over_grpc, with_schema, in_process, variants, rounds)
            return rows + _compile_times(rounds)
    finally:
        server.terminate()
        server.wait(timeout=30)
        await asyncio.to_thread(engine.close)


def _prompt(i: int) -> str:
    return f"Request number {i}: " + "tell me more " * (i % 5)


def _start_server() -> tuple[subprocess.Popen, str]:
    args = [
        sys.executable,
        "-c",
        "from capmesh.cli.main import app; app()",
        "serve",
        "llm",
        "--port",
        "0",
        "--model",
        "tiny",
    ]
    for key, value in SERVER_SETTINGS.items():
        args += ["--set", f"{key}={value}"]
    server = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "CAPMESH_LLM_LOG_JSON": "true"},
    )
    for line in server.stdout:  # the server prints one line with its address once it serves
        if "listening on" in line:
            return server, line.rsplit(" ", 1)[-1].strip()
    server.kill()
    raise RuntimeError("the LLM server exited before it listened")


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

    configure_logging("warning", True)  # as quiet as the server, for a fair comparison
    engine = TransformersChatEngine(LlmSettings(model="tiny", max_batch_size=16, max_waiting=64))
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


async def _measure(over_grpc, with_schema, in_process, variants, rounds: int) -> list[Row]:
    """Every round runs every case, so that the machine's changing load weighs on all alike; the
    `... per round` rows are medians of ratios taken within one round."""
    rates: dict[str, list[float]] = defaultdict(list)
    ttfts: dict[int, list[float]] = defaultdict(list)
    for _ in range(rounds):
        started = time.perf_counter()
        tokens = sum([(await over_grpc(i))[1] for i in range(16)])
        rates["sequential"].append(tokens / (time.perf_counter() - started))
        for label, call, levels in (("", over_grpc, CONCURRENCY), ("in-process ", in_process, IN_PROCESS)):
            for n in levels:
                started = time.perf_counter()
                results = await asyncio.gather(*(call(i) for i in range(n)))
                rates[f"{label}concurrent x{n}"].append(
                    sum(tokens for _, tokens in results) / (time.perf_counter() - started)
                )
                if not label:
                    ttfts[n].extend(first * 1000 for first, _ in results)
                if not label and n in SCHEMA_CONCURRENCY:  # right after the free run: the same load
                    started = time.perf_counter()
                    results = await asyncio.gather(*(with_schema(i) for i in range(n)))
                    rates[f"json schema x{n}"].append(
                        sum(tokens for _, tokens in results) / (time.perf_counter() - started)
                    )
                if not label and n == OPTIONS_CONCURRENCY:
                    for variant, call_variant in variants.items():
                        started = time.perf_counter()
                        results = await asyncio.gather(*(call_variant(i) for i in range(n)))
                        rates[f"{variant} x{n}"].append(
                            sum(tokens for _, tokens in results) / (time.perf_counter() - started)
                        )
    rows = [_row("sequential", "tokens/s", rates["sequential"])]
    for n in CONCURRENCY:
        rows.append(_row(f"concurrent x{n}", "tokens/s", rates[f"concurrent x{n}"], baseline="sequential"))
        rows.append(_row(f"ttft x{n}", "ms", ttfts[n], higher_is_better=False))
    for n in IN_PROCESS:
        rows.append(_row(f"in-process concurrent x{n}", "tokens/s", rates[f"in-process concurrent x{n}"]))
    for n in SCHEMA_CONCURRENCY:
        rows.append(_row(f"json schema x{n}", "tokens/s", rates[f"json schema x{n}"], baseline=f"concurrent x{n}"))
    n = OPTIONS_CONCURRENCY
    for variant in variants:
        rows.append(_row(f"{variant} x{n}", "tokens/s", rates[f"{variant} x{n}"], baseline=f"concurrent x{n}"))
    # Ratios of two rates measured in the same round: (case, numerator, denominator) per concurrency.
    ratios = [
        *((f"speedup x{n} vs sequential", f"concurrent x{n}", "sequential") for n in CONCURRENCY),
        *((f"grpc / in-process x{n}", f"concurrent x{n}", f"in-process concurrent x{n}") for n in IN_PROCESS),
        *((f"json schema / free x{n}", f"json schema x{n}", f"concurrent x{n}") for n in SCHEMA_CONCURRENCY),
        *((f"{v} / free x{n}", f"{v} x{n}", f"concurrent x{n}") for v in variants),
    ]
    for case, numerator, denominator in ratios:
        rows.append(_row(f"{case}, per round", "x", _ratios(rates[numerator], rates[denominator])))
    return rows


def _compile_times(rounds: int) -> list[Row]:
    """Compiling a new schema, then the same one again, with the server's per-model cache."""
    from transformers import AutoTokenizer

    from capmesh.services.llm.constraints import Grammars
    from capmesh.services.llm.domain import ResponseFormat
    from capmesh.services.llm.tiny import tiny_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_path())
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    first, cached = [], []
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


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators)]


def _row(case: str, unit: str, samples: list[float], baseline: str = "", higher_is_better: bool = True) -> Row:
    return Row(
        BENCHMARK,
        case,
        unit,
        statistics.median(samples),
        percentile(samples, 99),
        len(samples),
        baseline=baseline,
        higher_is_better=higher_is_better,
    )

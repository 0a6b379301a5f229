"""DocGen: the time of a 6-section document at 1 vs 6 sections written at once, through the gateway.

Four processes: the gateway, the LLM service on the tiny random checkpoint (continuous batching),
the DocGen service (which writes every section through the gateway's LlmService), and this client.
Every section asks for the same number of tokens (the random model seldom stops early), so the
ratio shows what concurrent sections gain from batching on the LLM side.

    python -m benchmarks.run docgen [--quick]
"""

from __future__ import annotations

import asyncio
import time

import grpc

from benchmarks.harness import Row, Stats
from benchmarks.processes import spawn
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.docgen.v1 import docgen_service_pb2_grpc
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb
from capmesh.gateway.v1 import registry_service_pb2_grpc

NAME = "docgen"
SECTIONS = 6
SECTION_TOKENS = 64
OUTLINE = pb.Outline(
    title="Benchmark", nodes=[pb.OutlineNode(title=f"Section {n}", summary="a paragraph") for n in range(1, 7)]
)


async def _wait_serving(gateway_address: str, capabilities: set[str]) -> None:
    async with grpc.aio.insecure_channel(gateway_address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = (await stub.ListCapabilities(registry_pb.ListCapabilitiesRequest())).capabilities
            if capabilities <= {c.capability for c in view if c.state == registry_pb.BACKEND_STATE_AVAILABLE}:
                return
            await asyncio.sleep(0.05)  # polling the registry until both backends are AVAILABLE
    raise RuntimeError(f"{', '.join(sorted(capabilities))} never became AVAILABLE")


async def _document_seconds(stub: docgen_service_pb2_grpc.DocGenServiceStub, concurrency: int) -> float:
    request = pb.StreamGenerateDocumentRequest(outline=OUTLINE, max_concurrent_sections=concurrency)
    started = time.perf_counter()
    async for message in stub.StreamGenerateDocument(request):
        if message.HasField("result"):
            assert len(message.result.sections) == SECTIONS
    return time.perf_counter() - started


async def _measure(quick: bool) -> list[Row]:
    gateway, banner = await spawn(
        ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", "--set", "log_level=warning"],
        " listening on ",
    )
    gateway_address = banner.split(" grpc ", 1)[1].split()[0]
    processes = [gateway]
    try:
        for name, settings in (
            ("llm", ["--model", "tiny", "--set", "device=cpu"]),
            ("docgen", ["--set", f"section_max_tokens={SECTION_TOKENS}"]),
        ):
            serve = ["-m", "capmesh.cli.main", "serve", name, "--port", "0", "--gateway", gateway_address]
            process, _ = await spawn([*serve, *settings, "--set", "log_level=warning"], " listening on ")
            processes.append(process)
        await _wait_serving(gateway_address, {"llm", "docgen"})
        repeats = 2 if quick else 5
        samples: dict[int, list[float]] = {1: [], SECTIONS: []}
        async with grpc.aio.insecure_channel(gateway_address) as channel:
            stub = docgen_service_pb2_grpc.DocGenServiceStub(channel)
            await _document_seconds(stub, SECTIONS)  # warm-up: the model loads on first use
            for _ in range(repeats):  # alternating, so both see the same machine load
                for concurrency in samples:
                    samples[concurrency].append(await _document_seconds(stub, concurrency))
    finally:
        for process in reversed(processes):
            process.terminate()
            await process.wait()
    return [
        Row.from_stats(
            NAME,
            f"{SECTIONS}-section document, {concurrency} at once ({SECTION_TOKENS} tokens each)",
            "s",
            Stats(tuple(values)),
            baseline=f"{SECTIONS}-section document, 1 at once ({SECTION_TOKENS} tokens each)"
            if concurrency > 1
            else "",
        )
        for concurrency, values in samples.items()
    ]


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))

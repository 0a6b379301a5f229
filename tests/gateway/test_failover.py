"""Failover with real backend processes: kill -9 one of two under steady load."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import pytest

from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import chat_request, stream_request
from tests.gateway.conftest import wait_available

REPO = Path(__file__).resolve().parents[2]
LOAD_WORKERS = 4


class BackendProcess:
    """`python -m tests.gateway.backend_process NAME --gateway ADDR` as a real child process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self, gateway: str) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.gateway.backend_process",
            self.name,
            "--gateway",
            gateway,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        )
        line = (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode()
        assert " listening on " in line, line
        self.address = line.split(" listening on ")[1].strip()

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()


@pytest.fixture
async def two_backend_processes(gateways, channel_to):
    gateway = await gateways(failure_threshold=3)
    processes = [BackendProcess("A"), BackendProcess("B")]
    await asyncio.gather(*(p.start(gateway.grpc_address) for p in processes))
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2, timeout_s=10)
    yield channel, processes
    for process in processes:
        process.kill()
        await process.wait()


async def test_kill_9_under_load_loses_no_unary_call_and_moves_new_calls_within_a_second(two_backend_processes):
    channel, processes = two_backend_processes
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    # One long stream on each backend (the less loaded of the two takes the second).
    streams, owners = [], []
    for _ in range(2):
        call = stub.StreamChat(stream_request("slow:100000"))
        owners.append((await call.read()).chunk.text)
        streams.append(call)
    assert sorted(owners) == ["A", "B"]

    results: list[tuple[float, str | None, grpc.StatusCode | None]] = []
    stop = asyncio.Event()

    async def steady_load():
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = await stub.Chat(chat_request("hello"), timeout=5)
                results.append((started, answer.message.content, None))
            except grpc.aio.AioRpcError as exc:
                results.append((started, None, exc.code()))

    workers = [asyncio.ensure_future(steady_load()) for _ in range(LOAD_WORKERS)]
    while len(results) < 50:
        await asyncio.sleep(0.01)  # let the load run before the kill
    victim = processes[0]
    killed_at = time.monotonic()
    victim.kill()
    await victim.wait()

    victim_stream = streams[owners.index("A")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            await victim_stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    while time.monotonic() < killed_at + 1.5:
        await asyncio.sleep(0.05)  # keep the load going past the one-second mark
    stop.set()
    await asyncio.gather(*workers)

    failures = [r for r in results if r[2] is not None]
    assert failures == [], f"{len(failures)} failed unary calls: {failures[:3]}"
    after = [who for started, who, _ in results if started > killed_at + 1.0]
    assert after and set(after) == {"B"}
    assert {who for started, who, _ in results if started < killed_at} == {"A", "B"}

    survivor_stream = streams[owners.index("B")]
    assert (await survivor_stream.read()).chunk.text == "B"  # still streaming
    survivor_stream.cancel()

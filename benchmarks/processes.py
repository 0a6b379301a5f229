"""Real processes for benchmarks: start one and read its banner, wait for the registry, and run a
benchmark's side in a worker process of its own."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


async def spawn(
    args: list[str], marker: str, env: dict[str, str] | None = None, seen: list[str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """Starts `python ARGS` (environment: `env`, default this one's) and waits for its `marker` line;
    the lines before it are appended to `seen` (what the process said about itself while starting)."""
    base = os.environ if env is None else env
    env = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        if not line:
            raise RuntimeError(f"{' '.join(args)} exited before it served")
        if marker in line:
            return process, line.strip()
        if seen is not None:
            seen.append(line.strip())


async def wait_available(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = await stub.ListCapabilities(pb.ListCapabilitiesRequest())
            if any(c.state == pb.BACKEND_STATE_AVAILABLE for c in view.capabilities):
                return
            await asyncio.sleep(0.05)  # polling the registry until the backend is AVAILABLE
    raise RuntimeError("the backend never became AVAILABLE")


REPLY = "bench-worker "  # the prefix of a worker's lines on stdout: libraries may print there too


class Worker:
    """A benchmark's side (a baseline, or one client path) in a fresh process of its own.

    A process that shares the measuring process's interpreter also shares its GIL, event loop,
    allocator and warm caches, which flatters or penalises one side; so each side runs in its own
    process, started once, and the benchmark asks it for one measurement at a time, alternating
    the sides round by round. The worker is `python -m MODULE ARGS`, which calls `serve_requests`.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, module: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        """Starts the worker and waits (up to 10 minutes: it may load a model) until it is ready."""
        base = os.environ if env is None else env
        env = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        worker = cls(process)
        try:
            await asyncio.wait_for(worker._reply(), 600)  # the first reply says it is ready
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sends one request; the worker's JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        await self.process.stdin.drain()
        return await self._reply()

    async def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = (await self.process.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the benchmark worker exited ({await self.process.wait()})")
            if line.startswith(REPLY):
                reply: dict[str, Any] = json.loads(line.removeprefix(REPLY))
                if "error" in reply:
                    raise RuntimeError(f"the benchmark worker failed: {reply['error']}")
                return reply

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()  # end of input: the worker returns
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def serve_requests(handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """The worker's side of `Worker`: says it is ready, then answers each request line on stdin
    with `handle`'s reply, until stdin ends."""

    def say(reply: dict[str, Any]) -> None:
        print(REPLY + json.dumps(reply), flush=True)

    say({"ready": True})
    while line := await asyncio.to_thread(sys.stdin.readline):
        try:
            say(await handle(json.loads(line)))
        except Exception as exc:  # told to the benchmark, which stops with the reason
            say({"error": f"{type(exc).__name__}: {exc}"})

"""Real processes for benchmarks: start one and read its banner, wait for the registry."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc

from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


async def spawn(
    args: list[str], marker: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """Starts `python ARGS` (environment: `env`, default this one's) and waits for its `marker` line."""
    base = os.environ if env is None else env
    env = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        if not line:
            raise RuntimeError(f"{' '.join(args)} exited before it served")
        if marker in line:
            return process, line.strip()


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

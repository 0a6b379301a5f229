"""`capmesh status` and `capmesh up` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import grpc
import pytest

from capmesh.gateway.v1 import registry_service_pb2 as pb
from tests.gateway.conftest import registry_stub, wait_available

CLI = [sys.executable, "-m", "capmesh.cli.main"]


async def _run(*args: str, timeout_s: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "250"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode, output.decode()


async def test_status_prints_every_capability_and_backend(gateways, backends, channel_to):
    gateway = await gateways()
    backend, _ = await backends("A", gateway.grpc_address)
    await wait_available(channel_to(gateway.grpc_address), 1)
    code, output = await _run("status", "--address", gateway.grpc_address)
    assert code == 0, output
    assert "echo" in output and "AVAILABLE" in output and f"127.0.0.1:{backend.port}" in output


async def test_status_names_an_unreachable_gateway():
    code, output = await _run("status", "--address", "127.0.0.1:1")
    assert code == 1 and "UNAVAILABLE" in output


@pytest.mark.e2e
async def test_up_starts_the_gateway_and_a_service_and_ctrl_c_stops_both(tmp_path):
    capability = "tts"
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "up",
        "--only",
        capability,
        "--port",
        "0",
        "--http-port",
        "0",
        "--log-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "250"},
    )
    lines = []
    try:
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("logs:"):
                break
        table = "".join(lines)
        address = re.search(r"gateway \(gRPC\)\s*│\s*(\S+)", table).group(1)
        assert re.search(rf"{capability}\s*│\s*\S+\s*│\s*AVAILABLE", table), table
        async with grpc.aio.insecure_channel(address) as channel:
            view = await registry_stub(channel).ListCapabilities(pb.ListCapabilitiesRequest())
            assert [c.capability for c in view.capabilities] == [capability]
        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "registration.deregistered" in (tmp_path / f"{capability}.log").read_text()
    assert "gateway.stopped" in (tmp_path / "gateway.log").read_text()

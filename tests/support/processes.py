"""Starting real server processes in tests: read the bound port from stdout, poll health."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def wait_serving(address: str, service: str = "", timeout_s: float = 60.0) -> None:
    """Polls grpc.health at `address` until `service` ("" = the whole server) is SERVING."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service or 'the server'} not SERVING at {address} within {timeout_s}s")
            time.sleep(0.05)  # polling readiness


def stop_process(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it is still there after `timeout_s`; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


class ServerProcess:
    """A child process that prints `... listening on HOST:PORT` once it serves."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 120.0) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.port = self._read_port(timeout_s)
        self.address = f"127.0.0.1:{self.port}"

    @classmethod
    def python_module(cls, module: str, *args: str, **kwargs) -> ServerProcess:
        return cls([sys.executable, "-m", module, *args], **kwargs)

    def _read_port(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args} exited with {self.process.wait()} before listening")
            match = LISTENING.search(line)
            if match:
                return int(match.group(2))
        raise TimeoutError(f"{self.args} did not listen within {timeout_s}s")

    def wait_serving(self, service: str = "", timeout_s: float = 60.0) -> None:
        wait_serving(self.address, service, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int:
        return stop_process(self.process, timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def capmesh_up(args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Runs `capmesh up ARGS` on free ports until its table is printed; yields the table's process ->
    address (e.g. "gateway (gRPC)", "tts", "tts-2"); Ctrl-C stops it, which must exit 0."""
    command = [sys.executable, "-m", "capmesh.cli.main", "up", *args, "--port", "0", "--http-port", "0"]
    process = subprocess.Popen(
        [*command, "--log-dir", str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**(env or os.environ), "COLUMNS": "250"},  # a wide table, one row per process
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("logs:"):
                break
        table = "".join(lines)
        assert "logs:" in table, table
        yield dict(re.findall(r"│\s*([a-z0-9-]+(?: \((?:gRPC|HTTP)\))?)\s*│\s*(\S+)\s*│", table))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0, "".join(lines)

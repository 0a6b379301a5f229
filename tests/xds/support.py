"""Real processes for the xDS tests: a gateway, echo backends, and proxyless clients reading their lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from capmesh.client.xds import BOOTSTRAP_FILE_ENV, bootstrap
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from tests.support.processes import ROOT, stop_process

GATEWAY_BANNER = re.compile(r"listening on grpc (\S+)")


class GatewayProcess:
    """`capmesh gateway` on free ports, health probes every 0.2 s (a dead backend is seen quickly)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0"]
        command += ["--set", "log_level=warning"]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "CAPMESH_GATEWAY_HEARTBEAT_INTERVAL_S": "0.2", **(env or {})},
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = GATEWAY_BANNER.search(line)
            if match:
                self.address = match.group(1)
                return
        raise RuntimeError(f"the gateway exited with {self.process.wait()} before listening")

    def backends(self, metadata: tuple[tuple[str, str], ...] = ()) -> dict[str, int]:
        """backend id -> state, for every backend the registry knows."""
        with grpc.insecure_channel(self.address) as channel:
            view = registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
                pb.ListCapabilitiesRequest(), metadata=metadata, timeout=10
            )
        return {b.backend.backend_id: b.state for c in view.capabilities for b in c.backends}

    def wait_available(self, count: int, timeout_s: float = 60.0, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        wait_until(
            lambda: sum(s == pb.BACKEND_STATE_AVAILABLE for s in self.backends(metadata).values()) == count,
            timeout_s,
            f"{count} AVAILABLE backends",
        )

    def stop(self) -> None:
        stop_process(self.process)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition


def write_bootstrap(directory: Path, gateway: str) -> Path:
    path = directory / "xds-bootstrap.json"
    path.write_text(json.dumps(bootstrap(gateway, "capmesh-test")))
    return path


class XdsClientProcess:
    """`python -m tests.xds.xds_client CAPABILITY`: its answers as (monotonic time, backend or !CODE)."""

    def __init__(
        self, capability: str, bootstrap_file: Path, env: dict[str, str] | None = None, model: str = ""
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.xds.xds_client", capability, *([model] if model else [])],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, BOOTSTRAP_FILE_ENV: str(bootstrap_file), **(env or {})},
        )
        self.answers: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            stamp, _, answer = line.strip().partition(" ")
            self.answers.append((float(stamp), answer))

    def since(self, start: float) -> list[str]:
        return [answer for stamp, answer in list(self.answers) if stamp >= start]

    def wait_answers(self, predicate: Callable[[list[str]], bool], start: float, timeout_s: float, what: str) -> None:
        wait_until(lambda: predicate(self.since(start)), timeout_s, what)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)

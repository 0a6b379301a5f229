"""Real processes for the trust-boundary tests: a gateway and the recording backend, configured
through their environment as an operator would; readiness is polled, never slept on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc

from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BANNER = re.compile(r"listening on grpc (\S+) http (\S+)")
SERVICE_BANNER = re.compile(r"listening on (\S+:\d+)")


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_keys(path: Path, entries: list[dict]) -> Path:
    """A keys file: each entry's `key` is replaced by its sha256, as operators store them."""
    lines = []
    for entry in entries:
        entry = dict(entry)
        entry["sha256"] = sha256(entry.pop("key"))
        lines.append(json.dumps(entry))
    path.write_text("# capmesh keys\n" + "\n".join(lines) + "\n")
    return path


class Process:
    """A child that prints a banner once it serves; `match` is the banner's match."""

    def __init__(self, args: list[str], env: dict[str, str], banner: re.Pattern[str], timeout_s: float = 120) -> None:
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **env}
        )
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{args} exited with {self.process.wait()} before serving")
            found = banner.search(line)
            if found:
                self.match = found
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args} did not serve within {timeout_s}s")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess(Process):
    def __init__(self, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0"]
        defaults = {"CAPMESH_GATEWAY_HEARTBEAT_INTERVAL_S": "0.2", "CAPMESH_GATEWAY_LEASE_S": "3"}
        super().__init__(command, {**defaults, **env}, GATEWAY_BANNER)
        self.address = self.match.group(1)
        self.http_url = self.match.group(2)


class RecorderProcess(Process):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__([sys.executable, "-m", "tests.security.recorder"], env, SERVICE_BANNER)
        self.address = self.match.group(1)


def wait_available(address: str, capability: str, metadata: tuple = (), timeout_s: float = 60) -> None:
    """Polls the gateway's registry until `capability` has an AVAILABLE backend."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        while True:
            view = stub.ListCapabilities(pb.ListCapabilitiesRequest(), metadata=metadata, timeout=10)
            if any(
                c.capability == capability and any(b.state == pb.BACKEND_STATE_AVAILABLE for b in c.backends)
                for c in view.capabilities
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{capability} not AVAILABLE at {address} within {timeout_s}s")
            time.sleep(0.05)  # polling the registry

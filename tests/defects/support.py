"""Real processes for the defect tests: a gateway, echo and stepper backends, the CLI; readiness by
polling (never a fixed sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.jobs.support import Process, gateway_env

ROOT = Path(__file__).resolve().parents[2]


def echo_backend(name: str, gateway: str, *args: str) -> Process:
    """`tests.gateway.backend_process NAME --gateway ADDR ...` (an echo LLM backend)."""
    return Process(["-m", "tests.gateway.backend_process", name, "--gateway", gateway, *args])


def gateway_process(**settings: object) -> tuple[Process, str, str]:
    """A gateway process on free ports -> (process, gRPC address, HTTP base URL)."""
    values = {"port": 0, "http_port": 0, "log_level": "warning", **settings}
    process = Process(["-m", "tests.jobs.gateway_process"], env=gateway_env(**values))
    grpc_address = process.line.split("grpc ", 1)[1].split(" ", 1)[0]
    http = process.line.split(" http ", 1)[1].split()[0] if " http " in process.line else ""
    return process, grpc_address, http if http.startswith("http") else f"http://{http}"


def cli(*args: str, cwd: Path | None = None, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`capmesh ARGS` as a real process, without a terminal; stdout and stderr captured apart."""
    env = {**os.environ, "COLUMNS": "", "TERM": "dumb"}
    env.pop("COLUMNS")
    return subprocess.run(
        [sys.executable, "-m", "capmesh.cli.main", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


class ServiceProcess:
    """`capmesh serve NAME --port 0 --gateway ADDR ARGS` (offline: tiny checkpoints, no hub); its
    stderr goes to a file whose tail is shown if it does not start."""

    def __init__(self, name: str, gateway: str, *args: str) -> None:
        import tempfile

        self.log = Path(tempfile.mkstemp(prefix=f"capmesh-{name}-", suffix=".log")[1])
        with self.log.open("w") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "capmesh.cli.main", "serve", name, "--port", "0", "--gateway", gateway, *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
        assert self.popen.stdout is not None
        for line in self.popen.stdout:  # blocks until the service says it serves (or exits)
            if "listening on" in line:
                return
        self.kill()
        raise RuntimeError(
            f"capmesh serve {name} did not start:\n" + "\n".join(self.log.read_text().splitlines()[-15:])
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)


def service_process(name: str, gateway: str, *args: str) -> ServiceProcess:
    return ServiceProcess(name, gateway, *args)


def available(address: str, capability: str) -> int:
    """How many of `capability`'s backends the gateway at `address` has AVAILABLE (0 on any error)."""
    import grpc

    from capmesh.gateway.v1 import registry_service_pb2 as pb
    from capmesh.gateway.v1 import registry_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        try:
            answer = stub.GetCapability(pb.GetCapabilityRequest(capability=capability), timeout=5)
        except grpc.RpcError:
            return 0
    return sum(1 for b in answer.capability.backends if b.state == pb.BACKEND_STATE_AVAILABLE)


def wait_until(check, timeout_s: float = 120.0, what: str = "condition"):
    """Polls `check()` until it returns something truthy (not a fixed wait)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling

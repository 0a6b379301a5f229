"""A gateway and capability servers as real processes with tracing on, for the telemetry tests:
port 0 everywhere, readiness by the line each prints and by polling health, logs kept in files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
POLL_S = 0.05  # polling a condition, not a wait for readiness itself


def tracing_env(endpoint: str) -> dict[str, str]:
    """The standard variables that switch tracing on, exporting at once rather than every 5 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
    )
    return env


class Process:
    """A child that prints `... listening on ...` once it serves; stderr (JSON logs) in `log`."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        assert self.popen.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            line = self.popen.stdout.readline()  # blocks until the child says it serves (or exits)
            if "listening on" in line:
                self.line = line.strip()
                return
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{args} did not start: {log.read_text()[-2000:]}")

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._stderr.close()


def start_gateway(env: dict[str, str], log: Path, **settings: object) -> tuple[Process, str, str]:
    """(process, gRPC address, HTTP URL)."""
    env = {**env, **{f"CAPMESH_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}}
    env.setdefault("CAPMESH_GATEWAY_PORT", "0")
    env.setdefault("CAPMESH_GATEWAY_HTTP_PORT", "0")
    process = Process(["-m", "capmesh.cli.main", "gateway"], env, log)
    grpc_address = process.line.split("grpc ", 1)[1].split(" ", 1)[0]
    http_url = process.line.split("http ", 1)[1].strip()
    return process, grpc_address, http_url


def start_service(capability: str, env: dict[str, str], log: Path, *args: str) -> tuple[Process, str]:
    """(process, its address)."""
    process = Process(["-m", "capmesh.cli.main", "serve", capability, "--port", "0", *args], env, log)
    return process, process.line.rsplit(" ", 1)[1]

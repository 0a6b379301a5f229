"""Backends, gateways and job helpers for the jobs tests: real servers, real processes, port 0,
readiness by polling (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2

from capmesh.client import aio_channel
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import job_service_pb2_grpc, registry_service_pb2_grpc
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb2
from capmesh.tts.v1 import tts_service_pb2

ROOT = Path(__file__).resolve().parents[2]
SYNTHESIZE = "/capmesh.tts.v1.TtsService/StreamSynthesize"
READY_TIMEOUT_S = 30.0
POLL_S = 0.02  # polling interval while waiting for a condition, not a wait for readiness itself


async def eventually(check, timeout_s: float = READY_TIMEOUT_S, what: str = "condition"):
    """Polls `check()` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


def tts_request(text: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(tts_service_pb2.StreamSynthesizeRequest(text=text))
    return packed


def submit_request(text: str, **kw) -> jobs_pb2.SubmitJobRequest:
    return jobs_pb2.SubmitJobRequest(method=SYNTHESIZE, request=tts_request(text), **kw)


def write_backends(path: Path, addresses: list[str], max_concurrency: int) -> Path:
    path.write_text(
        json.dumps(
            {"backends": [{"address": a, "capability": "tts", "max_concurrency": max_concurrency} for a in addresses]}
        )
    )
    return path


class Process:
    """A child process that prints one line when it serves; SIGKILL or SIGTERM it."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, marker: str = "listening on") -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            line = self.popen.stdout.readline()  # blocks until the child says it serves (or exits)
            if marker in line:
                self.line = line.strip()
                break
            if not line or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{args} did not start: {line!r}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
        self.popen.wait(10)


def start_stepper_process(step_s: float = 0.02, max_concurrency: int = 4) -> tuple[Process, str]:
    process = Process(
        ["-m", "tests.jobs.stepper_process", "--step-s", str(step_s), "--max-concurrency", str(max_concurrency)]
    )
    return process, process.line.rsplit(" ", 1)[1]


def gateway_env(**settings) -> dict[str, str]:
    return {f"CAPMESH_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}


def start_gateway_process(**settings) -> tuple[Process, str]:
    process = Process(["-m", "tests.jobs.gateway_process"], env=gateway_env(**settings))
    return process, process.line.split("grpc ", 1)[1].split(" ", 1)[0]


@dataclass
class Client:
    """Stubs of one gateway over one channel."""

    channel: grpc.aio.Channel

    def __post_init__(self) -> None:
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.operations = operations_pb2_grpc.OperationsStub(self.channel)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(self.channel)

    @classmethod
    def connect(cls, address: str) -> Client:
        return cls(aio_channel(address))

    async def submit(self, text: str, **kw) -> str:
        response = await self.jobs.SubmitJob(submit_request(text, **kw))
        return response.operation.name.split("/", 1)[1]

    async def get(self, job_id: str) -> tuple[operations_pb2.Operation, jobs_pb2.JobMetadata]:
        operation = await self.operations.GetOperation(operations_pb2.GetOperationRequest(name=f"operations/{job_id}"))
        meta = jobs_pb2.JobMetadata()
        operation.metadata.Unpack(meta)
        return operation, meta

    async def wait(self, job_id: str, timeout_s: float = READY_TIMEOUT_S) -> operations_pb2.Operation:
        async def done():
            operation, _ = await self.get(job_id)
            return operation if operation.done else None

        return await eventually(done, timeout_s, f"job {job_id} to end")

    async def events(
        self, job_id: str, after: str = "", until=None, timeout_s: float = READY_TIMEOUT_S
    ) -> list[jobs_pb2.JobEvent]:
        """Watches from `after` to the job's end, or until `until(event)` is true; a watch still
        open after `timeout_s` ends DEADLINE_EXCEEDED, so a stuck job fails its test quickly."""
        events = []
        request = jobs_pb2.WatchJobRequest(job_id=job_id, after_event_id=after)
        async for response in self.jobs.WatchJob(request, timeout=timeout_s):
            events.append(response.event)
            if until is not None and until(response.event):
                break
        return events

    async def available_backends(self, capability: str = "tts") -> int:
        try:
            answer = await self.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability=capability))
        except grpc.aio.AioRpcError:
            return 0
        return sum(1 for b in answer.capability.backends if b.state == registry_pb2.BACKEND_STATE_AVAILABLE)

    async def close(self) -> None:
        await self.channel.close()


def event_types(events) -> list[str]:
    return [jobs_pb2.JobEventType.Name(e.type).removeprefix("JOB_EVENT_TYPE_") for e in events]

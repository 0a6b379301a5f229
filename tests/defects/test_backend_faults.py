"""Defect 9 (a broken backend's INTERNAL reaches callers while a healthy one exists) and defect 10
(a cancelled job's backend call kept running), on real gateway and backend processes."""

from __future__ import annotations

import time

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import code_pb2

from capmesh.gateway.v1 import registry_service_pb2 as registry_pb2
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.defects.support import echo_backend, gateway_process
from tests.gateway.backends import chat_request
from tests.jobs.support import Client, eventually, start_stepper_process, write_backends


async def _available(client: Client, capability: str) -> list[registry_pb2.BackendStatus]:
    try:
        answer = await client.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability=capability))
    except grpc.aio.AioRpcError:
        return []
    return [b for b in answer.capability.backends if b.state == registry_pb2.BACKEND_STATE_AVAILABLE]


async def test_internal_from_a_broken_backend_is_retried_once_on_a_healthy_one() -> None:
    gateway, address, _ = gateway_process(failure_threshold=3)
    broken = healthy = None
    client = Client.connect(address)
    try:
        broken = echo_backend("A", address, "--faulty")
        healthy = echo_backend("B", address)
        await eventually(lambda: _two_available(client), what="both backends AVAILABLE")
        stub = llm_service_pb2_grpc.LlmServiceStub(client.channel)
        answers = [(await stub.Chat(chat_request("hello"), timeout=10)).message.content for _ in range(8)]
        assert answers == ["B"] * 8  # before: 3 of 8 ended INTERNAL while the broken one was tried

        # A request that crashes every backend is tried twice at most, then its INTERNAL is the answer.
        try:
            await stub.Chat(chat_request("crash"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INTERNAL
        else:
            raise AssertionError("a crashing request must fail")
    finally:
        await client.close()
        for process in (broken, healthy, gateway):
            if process is not None:
                process.kill()


async def _two_available(client: Client) -> bool:
    return len(await _available(client, "echo")) == 2


async def test_cancel_reaches_a_jobs_backend_call_at_once(tmp_path) -> None:
    stepper, stepper_address = start_stepper_process(step_s=0.05, max_concurrency=4)
    # A long lease: the heartbeat (every lease/3) must not be what delivers the cancel.
    backends = write_backends(tmp_path / "backends.json", [stepper_address], 4)
    gateway, address, _ = gateway_process(
        backends_file=backends, job_lease_s=60, files_dir=tmp_path / "files", heartbeat_interval_s=0.5
    )
    client = Client.connect(address)
    try:
        await eventually(lambda: _available(client, "tts"), what="the stepper AVAILABLE")
        # Cancels that race the job's start (right after submit) and cancels of a running job.
        jobs = [await client.submit("steps:100000") for _ in range(6)]
        for job_id in jobs[:3]:
            await _cancel(client, job_id)
        for job_id in jobs[3:]:
            await client.events(job_id, until=lambda e: e.HasField("progress") and e.progress.percent > 0)
            await _cancel(client, job_id)
        started = time.monotonic()
        for job_id in jobs:
            operation = await client.wait(job_id, timeout_s=5)
            assert operation.error.code == code_pb2.CANCELLED
        await eventually(lambda: _idle(client), timeout_s=5, what="no call in flight")
        assert time.monotonic() - started < 3.0
    finally:
        await client.close()
        gateway.kill()
        stepper.kill()


async def _cancel(client: Client, job_id: str) -> None:
    await client.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=f"operations/{job_id}"))


async def _idle(client: Client) -> bool:
    answer = await client.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability="tts"))
    return all(b.in_flight == 0 for b in answer.capability.backends)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_cancel_between_claim_and_start_stops_the_job_at_once(store, steppers, gateways) -> None:
    """The race behind defect 10: a cancel published after the claim but before the attempt is
    registered found nothing to stop, and the heartbeat (lease/3, here 20 s) delivered it late."""
    [(_, engine, address)] = await steppers(1, step_s=0.05)
    running, client = await gateways(store, [address], job_lease_s=60)
    scheduler = running.gateway.scheduler
    claim = scheduler.store.claim

    async def claim_then_cancel(*args, **kwargs):
        record = await claim(*args, **kwargs)
        if record is not None:
            await scheduler.cancel(record.job_id)  # lands before the attempt's task first runs
        return record

    scheduler.store.claim = claim_then_cancel  # type: ignore[method-assign]
    job_id = await client.submit("steps:100000")
    operation = await client.wait(job_id, timeout_s=5)
    assert operation.error.code == code_pb2.CANCELLED
    assert engine.steps_run < 40

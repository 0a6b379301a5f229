"""What survives: gateways killed and restarted, backends killed mid-job, cancels across restarts,
several gateways on one Redis. Real processes (kill -9) and a real redis-server."""

from __future__ import annotations

import pytest
from google.longrunning import operations_pb2
from google.rpc import code_pb2

from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from tests.jobs.conftest import FAST_JOBS
from tests.jobs.support import (
    Client,
    event_types,
    eventually,
    start_gateway_process,
    start_stepper_process,
    write_backends,
)

PROGRESS = jobs_pb2.JOB_EVENT_TYPE_PROGRESS


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def gateway_process(tmp_path, redis_server, processes):
    """`start(backend_addresses)` -> Client of a new gateway process on the shared Redis and files."""
    redis_server.flush()

    async def start(addresses: list[str]):
        backends = write_backends(tmp_path / "backends.json", addresses, max_concurrency=2)
        process, address = start_gateway_process(
            redis_url=redis_server.url,
            backends_file=backends,
            files_dir=tmp_path / "files",
            port=0,
            **{k: v for k, v in FAST_JOBS.items() if k != "log_level"},
            log_level="error",
        )
        processes.append(process)
        client = Client.connect(address)
        await eventually(lambda: client.available_backends(), what="a backend")
        return process, client

    return start


async def test_a_gateway_killed_mid_job_hands_it_over_and_the_watch_resumes(gateway_process, processes):
    stepper, address = start_stepper_process(step_s=0.05)
    processes.append(stepper)
    first, client = await gateway_process([address])
    job_id = await client.submit("steps:40")
    seen = await client.events(job_id, until=lambda e: e.type == PROGRESS and e.progress.step >= 3)
    first.kill()
    _, again = await gateway_process([address])
    rest = await again.events(job_id, after=seen[-1].event_id)
    kinds = event_types(seen) + event_types(rest)
    assert kinds.count("SUCCEEDED") == 1 and kinds[-1] == "SUCCEEDED"
    retry = rest[event_types(rest).index("RETRYING")]
    assert "stopped" in retry.message and retry.attempt == 1
    assert [e.attempt for e in rest if e.type == jobs_pb2.JOB_EVENT_TYPE_STARTED] == [2]
    ids = [e.event_id for e in seen + rest]
    assert len(set(ids)) == len(ids)
    assert [e.event_id for e in await again.events(job_id)] == ids  # the log is whole, in order
    operation, meta = await again.get(job_id)
    assert operation.HasField("response") and meta.attempt == 2


async def test_a_backend_killed_mid_job_retries_on_another_backend(gateway_process, processes):
    backends = [start_stepper_process(step_s=0.05) for _ in range(2)]
    processes.extend(p for p, _ in backends)
    _, client = await gateway_process([a for _, a in backends])
    job_id = await client.submit("steps:40")
    seen = await client.events(job_id, until=lambda e: e.type == PROGRESS)
    started = next(e for e in seen if e.type == jobs_pb2.JOB_EVENT_TYPE_STARTED)
    victim = next(p for p, a in backends if a.replace(":", "-") in started.message)
    survivor = next(a for p, a in backends if p is not victim).replace(":", "-")
    victim.kill()
    rest = await client.events(job_id, after=seen[-1].event_id)
    kinds = event_types(rest)
    assert kinds[-1] == "SUCCEEDED", [(k, e.message) for k, e in zip(kinds, rest)]
    retry = rest[kinds.index("RETRYING")]
    assert started.message.split("backend ")[1] in retry.message and retry.error.code == code_pb2.UNAVAILABLE
    restarted = rest[kinds.index("STARTED")]
    assert restarted.attempt == 2 and survivor in restarted.message


async def test_a_cancel_survives_restarts_and_reaches_a_job_whose_gateway_died(gateway_process, processes):
    stepper, address = start_stepper_process(step_s=0.05)
    processes.append(stepper)
    first, client = await gateway_process([address])
    cancelled = await client.submit("steps:400")
    await client.events(cancelled, until=lambda e: e.type == PROGRESS)
    await client.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=f"operations/{cancelled}"))
    assert (await client.wait(cancelled)).error.code == code_pb2.CANCELLED
    orphan = await client.submit("steps:400")
    await client.events(orphan, until=lambda e: e.type == PROGRESS)
    first.kill()
    second, again = await gateway_process([address])
    # The orphan's runner is dead but its lease has not expired yet: the cancel is recorded and the
    # job ends CANCELLED when the lease runs out, instead of being run again.
    await again.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=f"operations/{orphan}"))
    assert (await again.wait(orphan)).error.code == code_pb2.CANCELLED
    second.kill()
    _, third = await gateway_process([address])
    for job_id in (cancelled, orphan):
        _operation, meta = await third.get(job_id)
        assert meta.state == jobs_pb2.JOB_STATE_CANCELLED and meta.attempt == 1
        kinds = event_types(await third.events(job_id))
        assert kinds.count("STARTED") == 1 and kinds[-1] == "CANCELLED"


async def test_several_gateways_on_one_redis_run_each_job_once(steppers, gateways):
    backends = await steppers(2, step_s=0.02, max_concurrency=2)
    addresses = [a for _, _, a in backends]
    _, one = await gateways("redis", addresses, max_concurrency=2)
    _, two = await gateways("redis", addresses, max_concurrency=2)
    long_job = await one.submit("steps:120")  # 2.4 s: longer than the 1.5 s lease, kept by heartbeats
    jobs = [await (one if n % 2 else two).submit("steps:5") for n in range(10)]
    for job_id in [long_job, *jobs]:
        operation = await (two if job_id == long_job else one).wait(job_id)
        assert operation.HasField("response")
        kinds = event_types(await one.events(job_id))
        assert kinds.count("STARTED") == 1 and "RETRYING" not in kinds and kinds[-1] == "SUCCEEDED"

"""A job watched through a client with two gateway addresses: SIGKILL the gateway the watch runs on,
and `watch_job` (what `capmesh jobs watch` uses) resumes on the other from the last event id,
without a repeated or a missing event, and the job completes once."""

from __future__ import annotations

import grpc
import pytest

from capmesh.client import sync_channel
from capmesh.client.streams import watch_job
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import job_service_pb2_grpc
from tests.jobs.conftest import FAST_JOBS
from tests.jobs.support import event_types, start_gateway_process, start_stepper_process, submit_request, write_backends

pytestmark = pytest.mark.e2e


@pytest.fixture
def mesh(tmp_path, redis_server):
    """A stepper backend and two gateway processes on one Redis, both configured with the backend."""
    redis_server.flush()
    stepper, backend = start_stepper_process(step_s=0.05)
    started = [stepper]
    backends = write_backends(tmp_path / "backends.json", [backend], max_concurrency=2)
    settings = {k: v for k, v in FAST_JOBS.items() if k != "log_level"}
    gateways = []
    for _ in range(2):
        process, address = start_gateway_process(
            redis_url=redis_server.url,
            backends_file=backends,
            files_dir=tmp_path / "files",
            port=0,
            log_level="error",
            **settings,
        )
        started.append(process)
        gateways.append((process, address))
    yield gateways
    for process in started:
        process.kill()


def test_a_watch_cut_by_a_gateways_death_resumes_on_the_other(mesh):
    (gateway_a, address_a), (_, address_b) = mesh
    with sync_channel(f"{address_a},{address_b}") as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        # The channel is on A (the first address that answers); the job and its watch start there.
        submitted = jobs.SubmitJob(submit_request("steps:60"), wait_for_ready=True, timeout=30)
        job_id = submitted.operation.name.split("/", 1)[1]
        events: list[jobs_pb2.JobEvent] = []
        for event in watch_job(channel, job_id):
            events.append(event)
            progress = [e for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_PROGRESS]
            if len(progress) == 3 and gateway_a.popen.poll() is None:
                gateway_a.kill()

    assert gateway_a.popen.poll() is not None, "the watch ended before A was killed"
    kinds = event_types(events)
    assert kinds.count("SUCCEEDED") == 1 and kinds[-1] == "SUCCEEDED", kinds
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)  # nothing repeated
    with sync_channel(address_b) as survivor:
        whole = list(job_service_pb2_grpc.JobServiceStub(survivor).WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id)))
        assert [r.event.event_id for r in whole] == ids  # nothing missing, in order
        with pytest.raises(grpc.RpcError) as unknown:  # errors other than UNAVAILABLE end the watch at once
            list(watch_job(survivor, "no-such-job"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

"""Jobs through a real in-process gateway and real stepper backends, with either job store."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from capmesh.client import from_rpc_error
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.tts.v1 import tts_service_pb2
from tests.jobs.support import event_types, eventually, submit_request


async def test_a_job_streams_events_stores_its_audio_and_returns_the_result(store, steppers, gateways):
    [(_, _, address)] = await steppers(1)
    _running, client = await gateways(store, [address])
    job_id = await client.submit("steps:3", labels={"characterId": "char_001"})
    events = await client.events(job_id)
    assert event_types(events) == ["QUEUED", "STARTED"] + ["PROGRESS"] * 3 + ["SUCCEEDED"]
    assert len({e.event_id for e in events}) == len(events)
    assert "backend" in events[1].message and events[1].attempt == 1
    assert [e.progress.step for e in events[2:5]] == [1, 2, 3]
    operation, meta = await client.get(job_id)
    assert operation.done and operation.name == f"operations/{job_id}"
    assert meta.state == jobs_pb2.JOB_STATE_SUCCEEDED and meta.attempt == 1 and meta.labels["characterId"] == "char_001"
    assert meta.progress.percent == 100 and meta.HasField("end_time")
    result = jobs_pb2.JobResult()
    operation.response.Unpack(result)
    synthesis = tts_service_pb2.SynthesisResult()
    result.response.Unpack(synthesis)
    assert synthesis.sentence_count == 3
    [artifact] = result.artifacts
    assert artifact.size_bytes == 3 and artifact.mime_type == "text/plain; charset=utf-8"
    files = file_service_pb2_grpc.FileServiceStub(client.channel)
    data = b"".join(
        [m.data async for m in files.DownloadFile(file_service_pb2.DownloadFileRequest(file_id=artifact.file_id))]
    )
    assert data == b"xxx"
    assert events[-1].result == result


async def test_priority_order_holds_under_a_full_queue(store, steppers, gateways):
    [(_, _engine, address)] = await steppers(1, step_s=0.02)
    _, client = await gateways(store, [address], max_concurrency=1)
    blocker = await client.submit("steps:25")
    await client.events(blocker, until=lambda e: e.type == jobs_pb2.JOB_EVENT_TYPE_STARTED)
    priorities = [0, 5, -3, 5, 10, 0]
    jobs = [await client.submit("steps:1", priority=p) for p in priorities]
    _, meta = await client.get(jobs[-1])
    assert meta.state == jobs_pb2.JOB_STATE_QUEUED and meta.queue_position == 4  # behind 10, 5, 5 and the earlier 0
    for job_id in jobs:
        await client.wait(job_id)
    starts = []
    for index, job_id in enumerate(jobs):
        _, meta = await client.get(job_id)
        starts.append((meta.start_time.ToNanoseconds(), index))
    order = [index for _, index in sorted(starts)]
    assert order == [4, 1, 3, 0, 5, 2]  # 10; 5, 5 in submission order; 0, 0; -3


async def test_the_same_request_id_returns_the_same_job(store, steppers, gateways):
    [(_, _, address)] = await steppers(1)
    _, client = await gateways(store, [address])
    first = await client.jobs.SubmitJob(submit_request("steps:2", request_id="req-42"))
    again = await client.jobs.SubmitJob(submit_request("steps:2", request_id="req-42"))
    assert first.operation.name == again.operation.name
    await client.wait(first.operation.name.split("/")[1])
    later = await client.jobs.SubmitJob(submit_request("steps:2", request_id="req-42"))
    assert later.operation.name == first.operation.name and later.operation.done
    by_request_id = operations_pb2.ListOperationsRequest(filter='request_id = "req-42"')
    listed = await client.operations.ListOperations(by_request_id)
    assert [o.name for o in listed.operations] == [first.operation.name]


async def test_a_full_queue_is_resource_exhausted_with_retry_info(store, gateways):
    _, client = await gateways(store, [], job_queue_limit=2)  # no backend: jobs stay queued
    await client.submit("steps:1")
    await client.submit("steps:1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.submit("steps:1")
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "JOB_QUEUE_FULL"
    assert error.retry_after_s and error.retry_after_s > 0


async def test_invalid_submissions_name_their_fields(store, gateways):
    _, client = await gateways(store, [])
    bad = submit_request("steps:1", priority=101, max_attempts=11)
    bad.request.Pack(tts_service_pb2.ListVoicesRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.jobs.SubmitJob(bad)
    fields = {f for f, _ in from_rpc_error(caught.value).field_violations}
    assert fields == {"request", "priority", "max_attempts"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(method="/capmesh.nope.v1.X/Y"))
    assert from_rpc_error(caught.value).field_violations[0][0] == "method"
    for name in ("jobs/1", "operations/"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.operations.GetOperation(operations_pb2.GetOperationRequest(name=name))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.operations.GetOperation(operations_pb2.GetOperationRequest(name="operations/unknown"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("text, code", [("refuse", code_pb2.FAILED_PRECONDITION), ("", code_pb2.INVALID_ARGUMENT)])
async def test_callers_mistakes_fail_at_once_without_retry(store, steppers, gateways, text, code):
    [(_, _, address)] = await steppers(1)
    _, client = await gateways(store, [address])
    job_id = await client.submit(text, max_attempts=3)
    operation = await client.wait(job_id)
    assert operation.error.code == code
    events = await client.events(job_id)
    assert event_types(events) == ["QUEUED", "STARTED", "FAILED"]


async def test_cancel_reaches_the_backend_and_records_cancelled(store, steppers, gateways):
    [(_, engine, address)] = await steppers(1, step_s=0.02)
    _, client = await gateways(store, [address])
    job_id = await client.submit("steps:1000")
    seen = await client.events(job_id, until=lambda e: e.type == jobs_pb2.JOB_EVENT_TYPE_PROGRESS)
    await client.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=f"operations/{job_id}"))
    operation = await client.wait(job_id)
    assert operation.error.code == code_pb2.CANCELLED
    await eventually(engine.stopped.is_set, what="the engine to stop")
    assert engine.steps_run < 1000
    rest = await client.events(job_id, after=seen[-1].event_id)
    assert event_types(rest)[-1] == "CANCELLED" and "PROGRESS" not in event_types(rest)[1:]


async def test_cancel_of_a_queued_job_is_immediate_and_delete_needs_a_finished_job(store, gateways):
    _, client = await gateways(store, [])
    job_id = await client.submit("steps:1")
    name = f"operations/{job_id}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.operations.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await client.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
    operation, meta = await client.get(job_id)
    assert operation.done and meta.state == jobs_pb2.JOB_STATE_CANCELLED
    assert event_types(await client.events(job_id)) == ["QUEUED", "CANCELLED"]
    await client.operations.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.get(job_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_by_labels_state_and_capability_with_paging(store, steppers, gateways):
    [(_, _, address)] = await steppers(1)
    _, client = await gateways(store, [address])
    ours = [await client.submit("steps:1", labels={"characterId": "char_001", "n": str(n)}) for n in range(3)]
    other = await client.submit("steps:1", labels={"characterId": "char_002"})
    for job_id in [*ours, other]:
        await client.wait(job_id)
    names, token = [], ""
    while True:
        page = await client.operations.ListOperations(
            operations_pb2.ListOperationsRequest(
                filter='labels.characterId = "char_001" AND state = SUCCEEDED', page_size=2, page_token=token
            )
        )
        names += [o.name.split("/")[1] for o in page.operations]
        token = page.next_page_token
        if not token:
            break
    assert names == ours[::-1]
    none = await client.operations.ListOperations(
        operations_pb2.ListOperationsRequest(filter='labels.characterId = "char_001" AND state = FAILED')
    )
    assert list(none.operations) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.operations.ListOperations(operations_pb2.ListOperationsRequest(filter="colour = blue"))
    assert from_rpc_error(caught.value).field_violations[0][0] == "filter"


async def test_wait_operation_returns_when_done_or_at_its_timeout(store, steppers, gateways):
    [(_, _, address)] = await steppers(1, step_s=0.02)
    _, client = await gateways(store, [address])
    job_id = await client.submit("steps:5")
    operation = await client.operations.WaitOperation(
        operations_pb2.WaitOperationRequest(name=f"operations/{job_id}", timeout=duration_pb2.Duration(seconds=30))
    )
    assert operation.done and operation.HasField("response")
    slow = await client.submit("steps:1000")
    operation = await client.operations.WaitOperation(
        operations_pb2.WaitOperationRequest(name=f"operations/{slow}", timeout=duration_pb2.Duration(nanos=200_000_000))
    )
    assert not operation.done


async def test_a_job_deadline_fails_it_with_deadline_exceeded(store, steppers, gateways):
    [(_, engine, address)] = await steppers(1, step_s=0.02)
    _, client = await gateways(store, [address])
    job_id = await client.submit("steps:1000", timeout_seconds=0.5)
    operation = await client.wait(job_id)
    assert operation.error.code == code_pb2.DEADLINE_EXCEEDED
    await eventually(engine.stopped.is_set, what="the engine to stop")


async def test_a_watch_resumes_after_the_given_event_id(store, steppers, gateways):
    [(_, _, address)] = await steppers(1)
    _, client = await gateways(store, [address])
    job_id = await client.submit("steps:4")
    everything = await client.events(job_id)
    for cut in range(len(everything)):
        rest = await client.events(job_id, after=everything[cut].event_id)
        assert [e.event_id for e in rest] == [e.event_id for e in everything[cut + 1 :]]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.events(job_id, after="not-an-id")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_unary_method_runs_as_a_job_too(store, steppers, gateways):
    # The stepper does not implement ListVoices, so its backend answers INTERNAL: a final failure.
    [(_, _, address)] = await steppers(1)
    _, client = await gateways(store, [address])
    request = submit_request("")
    request.method = "/capmesh.tts.v1.TtsService/ListVoices"
    request.request.Pack(tts_service_pb2.ListVoicesRequest())
    job_id = (await client.jobs.SubmitJob(request)).operation.name.split("/")[1]
    operation = await client.wait(job_id)
    assert operation.error.code == code_pb2.INTERNAL and "ListVoices" in operation.error.message
    assert event_types(await client.events(job_id)) == ["QUEUED", "STARTED", "FAILED"]


async def test_two_jobs_run_side_by_side_when_capacity_allows(store, steppers, gateways):
    backends = await steppers(2, step_s=0.02)
    _, client = await gateways(store, [a for _, _, a in backends])
    first, second = await client.submit("steps:20"), await client.submit("steps:20")
    await asyncio.gather(client.wait(first), client.wait(second))
    (_, a), (_, b) = await client.get(first), await client.get(second)
    assert a.backend_id != b.backend_id
    assert b.start_time.ToNanoseconds() < a.end_time.ToNanoseconds()

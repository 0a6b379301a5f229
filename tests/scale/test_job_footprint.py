"""What a finished job costs in Redis for its retention (24 h result, 7 days record): a TTS-sized
job (a 200-byte request, one label, 20 progress events, a result naming one stored file) ends in
three keys and at most 2.5 KB once its events are compacted, and reads the same before and after.
The figures are printed: `pytest tests/scale/test_job_footprint.py -s`."""

from __future__ import annotations

import time

import redis.asyncio
from google.protobuf import any_pb2

from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.gateway.server.jobs.record import QUEUED, RUNNING, SUCCEEDED, JobRecord, make_event
from capmesh.gateway.server.jobs.store_redis import RedisJobStore
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.tts.v1 import tts_service_pb2

E = jobs_pb2
PROGRESS_EVENTS = 20
FOOTPRINT_BOUND = 2560  # bytes in Redis per finished job, its events compacted
OWNER = "gateway-1"


async def _footprint(client: redis.asyncio.Redis, job_id: str) -> tuple[int, int]:
    """(keys, bytes) of the job's own keys."""
    keys = [key async for key in client.scan_iter(match=f"*{job_id}*")]
    sizes = [await client.memory_usage(key, samples=0) or 0 for key in keys]
    return len(keys), sum(sizes)


async def test_a_finished_job_is_three_keys_and_at_most_2_5_kb_and_reads_the_same(redis_server):
    redis_server.flush()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisJobStore(client)
    request = any_pb2.Any()
    request.Pack(tts_service_pb2.StreamSynthesizeRequest(text="A sentence of about two hundred bytes. " * 5))
    now = time.time()
    record = JobRecord(
        job_id="f00d" * 8,
        capability="tts",
        method="/capmesh.tts.v1.TtsService/StreamSynthesize",
        request=request.SerializeToString(),
        labels={"characterId": "char_001"},
        create_time=now,
        deadline=now + 3600,
    )
    job_id = record.job_id
    try:
        await store.submit(record, make_event(job_id, E.JOB_EVENT_TYPE_QUEUED, QUEUED), queue_limit=10, hold_s=3600)
        assert (await store.claim("tts", OWNER, 30, now)).job_id == job_id
        for step in range(1, PROGRESS_EVENTS + 1):
            progress = progress_pb2.Progress(stage="synthesizing", percent=100 * step / PROGRESS_EVENTS)
            event = make_event(job_id, E.JOB_EVENT_TYPE_PROGRESS, RUNNING, attempt=1, progress=progress)
            assert await store.record(job_id, OWNER, {"progress": progress.SerializeToString()}, event)
        result = jobs_pb2.JobResult(
            artifacts=[artifact_pb2.Artifact(mime_type="audio/wav", size_bytes=96044, file_id="f" * 32)]
        )
        finished = await store.finish(
            job_id,
            OWNER,
            SUCCEEDED,
            {"end_time": time.time()},
            make_event(job_id, E.JOB_EVENT_TYPE_SUCCEEDED, SUCCEEDED, attempt=1, result=result),
            result=result.SerializeToString(),
            result_ttl_s=24 * 3600,
            record_ttl_s=7 * 24 * 3600,
        )
        assert finished
        events = await store.events_after(job_id, "", 0)
        keys_before, bytes_before = await _footprint(client, job_id)

        await store.compact(time.time() + 1)  # as the maintenance loop does a while after the end
        keys_after, bytes_after = await _footprint(client, job_id)
        print(f"\nfinished job: {keys_before} keys, {bytes_before} B; compacted: {keys_after} keys, {bytes_after} B")

        assert await store.events_after(job_id, "", 0) == events
        middle = events[PROGRESS_EVENTS // 2][0]
        assert await store.events_after(job_id, middle, 0) == events[PROGRESS_EVENTS // 2 + 1 :]
        assert await store.events_after(job_id, events[-1][0], 1.0) == []  # finished: no wait
        operation = (await store.get(job_id)).operation()
        assert operation.done and operation.response.Unpack(jobs_pb2.JobResult())
        assert (keys_after, len(events)) == (3, PROGRESS_EVENTS + 2)
        assert bytes_after <= FOOTPRINT_BOUND
        await store.delete(job_id)
        assert await _footprint(client, job_id) == (0, 0)
    finally:
        await store.close()
        await client.aclose()

"""The job stores' contract without a gateway: retention, fencing by lease, recovery."""

from __future__ import annotations

import time

import pytest
import redis.asyncio
from google.rpc import code_pb2

from capmesh.gateway.server.jobs.record import CANCELLED, QUEUED, SUCCEEDED, JobRecord, make_event
from capmesh.gateway.server.jobs.store_memory import MemoryJobStore
from capmesh.gateway.server.jobs.store_redis import RedisJobStore
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_record(job_id: str, priority: int = 0) -> JobRecord:
    now = time.time()
    return JobRecord(
        job_id=job_id,
        capability="tts",
        method="/m",
        request=b"",
        priority=priority,
        create_time=now,
        deadline=now + 60,
        max_attempts=3,
    )


def event(job_id: str, kind: int, state: int) -> jobs_pb2.JobEvent:
    return make_event(job_id, kind, state)


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server):
    if request.param == "memory":
        clock = Clock()
        yield MemoryJobStore(clock=clock), clock, None
        return
    redis_server.flush()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield RedisJobStore(client), None, client
    await client.aclose()


async def submit(store, job_id: str, priority: int = 0):
    record, created = await store.submit(
        new_record(job_id, priority), event(job_id, 1, QUEUED), queue_limit=100, hold_s=3600
    )
    assert created
    return record


async def test_results_and_records_expire_on_their_own_clocks(store):
    jobs, clock, client = store
    await submit(jobs, "a")
    claimed = await jobs.claim("tts", "owner-1", 30, time.time())
    assert claimed.job_id == "a" and claimed.attempt == 1
    done = await jobs.finish(
        "a",
        "owner-1",
        SUCCEEDED,
        {"end_time": time.time()},
        event("a", 5, SUCCEEDED),
        result=jobs_pb2.JobResult().SerializeToString() + b"\x12\x00",
        result_ttl_s=10,
        record_ttl_s=100,
    )
    assert done
    if client is not None:
        assert 9_000 < await client.pttl("capmesh:job:a:result") <= 10_000
        assert 99_000 < await client.pttl("capmesh:job:a") <= 100_000
        assert await client.pttl("capmesh:job:a:events") <= 10_000
        return
    clock.now += 11
    record = await jobs.get("a")
    assert record.result == b"" and record.operation().error.code == code_pb2.NOT_FOUND
    clock.now += 90
    assert await jobs.get("a") is None


async def test_writes_are_fenced_by_the_lease_and_expired_runs_are_recovered(store):
    jobs, clock, client = store
    await submit(jobs, "a")
    await jobs.claim("tts", "owner-1", 0.05 if client is not None else 5, time.time())
    assert not await jobs.record("a", "owner-2", {"backend_id": "x"}, None)
    if client is not None:
        await client.delete("capmesh:job:a:lease")  # the runner's process died: its lease is gone
    else:
        clock.now += 6
    assert not await jobs.record("a", "owner-1", {"backend_id": "x"}, None)
    assert await jobs.recover_expired(event("", 4, QUEUED)) == [("a", False)]
    record = await jobs.get("a")
    assert record.state == QUEUED and record.attempt == 1
    again = await jobs.claim("tts", "owner-2", 30, time.time())
    assert again.attempt == 2
    assert await jobs.renew("a", "owner-2", 30) == (True, False)
    await jobs.request_cancel("a")
    assert await jobs.renew("a", "owner-2", 30) == (True, True)
    assert not await jobs.finish(
        "a", "", CANCELLED, {}, event("a", 7, CANCELLED), result=b"", result_ttl_s=1, record_ttl_s=1
    )  # a live runner owns it: only it may finish it
    assert await jobs.finish(
        "a", "owner-2", CANCELLED, {}, event("a", 7, CANCELLED), result=b"", result_ttl_s=10, record_ttl_s=10
    )


async def test_claims_follow_priority_then_submission_order_and_skip_cancelled(store):
    jobs, _, _ = store
    for job_id, priority in [("low", -5), ("a", 0), ("high", 9), ("b", 0), ("gone", 50)]:
        await submit(jobs, job_id, priority)
    await jobs.request_cancel("gone")
    assert await jobs.finish(
        "gone", "", CANCELLED, {}, event("gone", 7, CANCELLED), result=b"", result_ttl_s=10, record_ttl_s=10
    )
    assert (await jobs.get("low")).queue_position == 3
    order = [(await jobs.claim("tts", "o", 30, time.time())).job_id for _ in range(4)]
    assert order == ["high", "a", "b", "low"]
    assert await jobs.claim("tts", "o", 30, time.time()) is None

"""What the scheduler needs from a job store; two stores implement it with the same behaviour:
`MemoryJobStore` (one process, no durability) and `RedisJobStore` (durable, shared by gateways).

Ownership: a running attempt belongs to the gateway holding the job's lease (`owner`). Writes of a
running attempt (`record`, `requeue`, `finish` with an owner) are fenced by that lease, so a gateway
that lost its lease (paused too long; another took the job over) cannot overwrite the new attempt.
`finish` without an owner (cancel of a queued job, an overdue deadline) only acts on jobs that no
gateway is running. Every transition and its event are written atomically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from capmesh.gateway.server.jobs.record import JobRecord
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2

Signal = Callable[[str], Awaitable[None] | None]


class QueueFull(Exception):
    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs queued")
        self.queued = queued


class JobStore(Protocol):
    durable: bool

    async def submit(
        self, record: JobRecord, queued_event: jobs_pb2.JobEvent, *, queue_limit: int, hold_s: float
    ) -> tuple[JobRecord, bool]:
        """Stores and queues a new job, or returns the job of an earlier submission with the same
        request_id (created=False). Raises QueueFull when the capability's queue is at its limit."""

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def page(self, offset: int, limit: int, labels: dict[str, str] | None = None) -> list[JobRecord]:
        """Jobs newest first; with `labels`, only jobs carrying all of them, read from a label index
        (offsets then count within that index)."""

    async def delete(self, job_id: str) -> None: ...

    async def capabilities(self) -> list[str]: ...

    async def queue_length(self, capability: str) -> int: ...

    async def claim(self, capability: str, owner: str, lease_s: float, now: float) -> JobRecord | None:
        """Takes the first job of the queue (highest priority, oldest) and its lease, atomically."""

    async def renew(self, job_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
        """(lease still held, cancel requested)."""

    async def record(self, job_id: str, owner: str, fields: dict, event: jobs_pb2.JobEvent | None) -> bool: ...

    async def requeue(self, job_id: str, owner: str, ready_at: float, fields: dict, event: jobs_pb2.JobEvent) -> bool:
        """Gives the job back (retry after a backoff, or a gateway stopping); it is queued again at
        `ready_at` in its original place."""

    async def finish(
        self,
        job_id: str,
        owner: str,
        state: int,
        fields: dict,
        event: jobs_pb2.JobEvent,
        *,
        result: bytes,
        result_ttl_s: float,
        record_ttl_s: float,
    ) -> bool: ...

    async def request_cancel(self, job_id: str) -> JobRecord | None:
        """Persists the cancel request; returns the record (None when unknown)."""

    async def promote_due(self, now: float) -> list[str]:
        """Queues the retries whose backoff has passed; returns their capabilities."""

    async def recover_expired(self, event: jobs_pb2.JobEvent) -> list[tuple[str, bool]]:
        """Jobs whose runner's lease expired: queued again (with `event`), or reported as
        (job_id, True) when a cancel was asked so that the caller records CANCELLED."""

    async def overdue(self, now: float) -> list[str]:
        """Ids of unfinished jobs past their deadline."""

    async def compact(self, finished_before: float) -> None:
        """Stores the events of jobs that finished before `finished_before` (epoch seconds) in the
        least space, now that nobody waits on them; reading them stays the same."""

    async def events_after(self, job_id: str, after: str, block_s: float) -> list[tuple[str, jobs_pb2.JobEvent]]:
        """Events after the id `after` ("" = from the start), waiting up to `block_s` for one."""

    def validate_event_id(self, event_id: str) -> None: ...

    async def publish(self, signal: str) -> None:
        """Tells every gateway sharing the store (this one included): "wake:<cap>", "cancel:<id>"."""

    async def start(self, on_signal: Signal) -> None: ...

    async def close(self) -> None: ...

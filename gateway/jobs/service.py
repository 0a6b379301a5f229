"""capmesh.gateway.v1.JobService and google.longrunning.Operations over the JobScheduler."""

from __future__ import annotations

import time
from typing import Any

import structlog
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.index import decode_page_token, encode_page_token
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.jobs.filtering import indexed_labels, parse_filter
from capmesh.gateway.server.jobs.record import TERMINAL_EVENTS, job_id_from_name
from capmesh.gateway.server.jobs.scheduler import JobScheduler, new_owner_id
from capmesh.gateway.server.jobs.store_memory import MemoryJobStore
from capmesh.gateway.server.jobs.store_redis import RedisJobStore
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.routing.router import Router
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import job_service_pb2_grpc
from capmesh.services.runtime.errors import InvalidArgument

log = structlog.get_logger("capmesh.jobs")

JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
OPERATIONS_SERVICE = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
WATCH_BLOCK_S = 2.0  # below the Redis client's read timeout
DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 600.0
LIST_SCAN_BATCH = 200


async def watch_events(scheduler: JobScheduler, job_id: str, after: str = ""):
    """Every event of the job after `after`, live, until its final event."""
    scheduler.store.validate_event_id(after)
    await scheduler.get(job_id)
    while True:
        batch = await scheduler.store.events_after(job_id, after, 0)
        if not batch:
            record = await scheduler.store.get(job_id)
            if record is None or record.done:  # deleted, or past its final event
                return
            batch = await scheduler.store.events_after(job_id, after, WATCH_BLOCK_S)
        for event_id, event in batch:
            yield event
            after = event_id
            if event.type in TERMINAL_EVENTS:
                return


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, scheduler: JobScheduler) -> None:
        self.scheduler = scheduler

    async def SubmitJob(self, request, context):
        record, _ = await self.scheduler.submit(request)
        return jobs_pb2.SubmitJobResponse(operation=record.operation())

    async def WatchJob(self, request, context):
        async for event in watch_events(self.scheduler, request.job_id, request.after_event_id):
            yield jobs_pb2.WatchJobResponse(event=event)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, scheduler: JobScheduler) -> None:
        self.scheduler = scheduler

    async def GetOperation(self, request, context):
        return (await self.scheduler.get(job_id_from_name(request.name))).operation()

    async def ListOperations(self, request, context):
        if request.name not in ("", "operations", "operations/"):
            raise InvalidArgument.single("name", 'must be empty or "operations"')
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument.single("page_size", "must be between 1 and 1000, or 0 for 100")
        matches = parse_filter(request.filter)
        labels = indexed_labels(request.filter)  # read from the label index: cost follows the matches
        limit = request.page_size or 100
        position = decode_page_token(request.page_token)
        found = []
        while len(found) < limit:
            batch = await self.scheduler.store.page(position, LIST_SCAN_BATCH, labels)
            if not batch:
                position = -1
                break
            for index, record in enumerate(batch):
                if matches(record):
                    found.append(record)
                    if len(found) == limit:
                        position += index + 1
                        break
            else:
                position += len(batch)
        token = encode_page_token(position) if position >= 0 and len(found) == limit else ""
        return operations_pb2.ListOperationsResponse(operations=[r.operation() for r in found], next_page_token=token)

    async def DeleteOperation(self, request, context):
        await self.scheduler.delete(job_id_from_name(request.name))
        return empty_pb2.Empty()

    async def CancelOperation(self, request, context):
        await self.scheduler.cancel(job_id_from_name(request.name))
        return empty_pb2.Empty()

    async def WaitOperation(self, request, context):
        job_id = job_id_from_name(request.name)
        wait_s = request.timeout.ToNanoseconds() / 1e9 if request.HasField("timeout") else DEFAULT_WAIT_S
        if wait_s < 0:
            raise InvalidArgument.single("timeout", "must not be negative")
        remaining = context.time_remaining()
        wait_s = min(wait_s, MAX_WAIT_S, remaining - 0.05 if remaining is not None else MAX_WAIT_S)
        record = await self.scheduler.get(job_id)
        until = time.monotonic() + wait_s
        after = ""
        # Blocking reads bounded by the time left, so no store call is ever cut off midway.
        while not record.done and (left := until - time.monotonic()) > 0:
            batch = await self.scheduler.store.events_after(job_id, after, min(left, WATCH_BLOCK_S))
            if batch:
                after = batch[-1][0]
            record = await self.scheduler.get(job_id)
        return record.operation()


UNKNOWN_BACKEND_CAPACITY = 4  # a backend that did not say its max_concurrency (the runtime default)


def backend_capacity(registry):
    """Jobs of a capability this gateway runs at once: the sum of max_concurrency over the routable
    backends serving it. The job's capability is the router's name for it, which is the backends'
    declared capability once they registered and the contract's before; both count."""

    def serves(entry, capability: str) -> bool:
        if entry.record.capability == capability:
            return True
        services = registry.services_of(entry.record)
        return any(getattr(registry.catalog.get(s), "capability", None) == capability for s in services)

    def capacity(capability: str) -> int:
        now = time.monotonic()
        return sum(
            entry.record.max_concurrency or UNKNOWN_BACKEND_CAPACITY
            for entry in list(registry.entries.values())
            if entry.routable(now) and serves(entry, capability)
        )

    return capacity


def build_scheduler(
    settings: GatewaySettings, registry: Registry, router: Router, files: FileStore, redis: Any, instance_id: str
) -> JobScheduler:
    """The job runner of a gateway: its jobs kept in Redis when the gateway uses it, else in memory."""
    store = RedisJobStore(redis) if redis is not None else MemoryJobStore()
    scheduler = JobScheduler(
        store, router, files, settings, capacity=backend_capacity(registry), owner=new_owner_id(instance_id)
    )
    registry.add_listener(scheduler.wake)  # a backend appearing or healing frees capacity
    return scheduler

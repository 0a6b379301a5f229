"""The in-memory job store: the same contract as the Redis store, within one process.

Every method runs without awaiting in its critical part, so each transition is atomic on the
event loop just as a Lua script is atomic in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import inspect
import itertools
import time
from dataclasses import dataclass, field

from capmesh.gateway.server.jobs.record import QUEUED, RUNNING, TERMINAL_STATES, JobRecord, queue_score
from capmesh.gateway.server.jobs.store import QueueFull, Signal
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.services.runtime.errors import InvalidArgument


@dataclass
class _Entry:
    record: JobRecord
    score: int
    events: list[jobs_pb2.JobEvent] = field(default_factory=list)
    lease_until: float = 0.0
    expire_at: float = float("inf")
    result_expire_at: float = float("inf")


class MemoryJobStore:
    durable = False

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._jobs: dict[str, _Entry] = {}
        self._by_request: dict[str, str] = {}
        self._queues: dict[str, list[tuple[int, str]]] = {}  # heaps of (score, job_id)
        self._queued: dict[str, set[str]] = {}
        self._delayed: dict[str, float] = {}
        self._sequence = itertools.count(1)
        self._changed = asyncio.Condition()
        self._on_signal: Signal | None = None

    # -- helpers --------------------------------------------------------------------------------
    def _entry(self, job_id: str) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is not None and entry.expire_at <= self._clock():
            self._drop(job_id)
            return None
        return entry

    def _drop(self, job_id: str) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None and self._by_request.get(entry.record.request_id) == job_id:
            del self._by_request[entry.record.request_id]
        self._delayed.pop(job_id, None)
        for queued in self._queued.values():
            queued.discard(job_id)

    def _view(self, entry: _Entry) -> JobRecord:
        record = copy.deepcopy(entry.record)
        if entry.result_expire_at <= self._clock():
            record.result = b""
        if record.state == QUEUED:
            record.queue_position = self._position(record.capability, entry.score)
        return record

    def _position(self, capability: str, score: int) -> int:
        queued = self._queued.get(capability, set())
        return sum(1 for s, job_id in self._queues.get(capability, []) if s < score and job_id in queued)

    def _enqueue(self, capability: str, job_id: str, score: int) -> None:
        heapq.heappush(self._queues.setdefault(capability, []), (score, job_id))
        self._queued.setdefault(capability, set()).add(job_id)

    def _append(self, entry: _Entry, event: jobs_pb2.JobEvent | None) -> None:
        if event is not None:
            stored = copy.deepcopy(event)
            stored.event_id = str(len(entry.events) + 1)
            entry.events.append(stored)

    def _held(self, entry: _Entry | None, owner: str) -> bool:
        return (
            entry is not None
            and entry.record.state == RUNNING
            and entry.record.owner == owner
            and entry.lease_until > self._clock()
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- contract -------------------------------------------------------------------------------
    async def submit(self, record, queued_event, *, queue_limit, hold_s):
        existing = self._by_request.get(record.request_id) if record.request_id else None
        if existing and self._entry(existing) is not None:
            return self._view(self._jobs[existing]), False
        if len(self._queued.get(record.capability, ())) >= queue_limit:
            raise QueueFull(len(self._queued[record.capability]))
        entry = _Entry(copy.deepcopy(record), queue_score(record.priority, next(self._sequence)))
        entry.expire_at = self._clock() + hold_s
        self._jobs[record.job_id] = entry
        if record.request_id:
            self._by_request[record.request_id] = record.job_id
        position = self._position(record.capability, entry.score)
        self._enqueue(record.capability, record.job_id, entry.score)
        queued_event = copy.deepcopy(queued_event)
        queued_event.progress.queue_position = position
        self._append(entry, queued_event)
        await self._notify()
        return self._view(entry), True

    async def get(self, job_id):
        entry = self._entry(job_id)
        return self._view(entry) if entry else None

    async def page(self, offset, limit, labels=None):
        wanted = (labels or {}).items()
        live = [
            e
            for job_id in list(self._jobs)
            if (e := self._entry(job_id)) is not None and all(e.record.labels.get(k) == v for k, v in wanted)
        ]
        live.sort(key=lambda e: (e.record.create_time, e.record.job_id), reverse=True)
        return [self._view(e) for e in live[offset : offset + limit]]

    async def delete(self, job_id):
        self._drop(job_id)

    async def capabilities(self):
        return list(self._queues)

    async def queue_length(self, capability):
        return len(self._queued.get(capability, ()))

    async def claim(self, capability, owner, lease_s, now):
        heap = self._queues.get(capability, [])
        while heap:
            _, job_id = heapq.heappop(heap)
            if job_id not in self._queued[capability]:
                continue  # cancelled or promoted twice: a stale heap entry
            self._queued[capability].discard(job_id)
            entry = self._entry(job_id)
            if entry is None or entry.record.state != QUEUED or entry.record.cancel_requested:
                continue
            record = entry.record
            record.state, record.owner, record.start_time, record.backend_id = RUNNING, owner, now, ""
            record.attempt += 1
            entry.lease_until = self._clock() + lease_s
            return self._view(entry)
        return None

    async def renew(self, job_id, owner, lease_s):
        entry = self._entry(job_id)
        if not self._held(entry, owner):
            return False, False
        entry.lease_until = self._clock() + lease_s
        return True, entry.record.cancel_requested

    async def record(self, job_id, owner, fields, event):
        entry = self._entry(job_id)
        if not self._held(entry, owner):
            return False
        for key, value in fields.items():
            setattr(entry.record, key, value)
        self._append(entry, event)
        await self._notify()
        return True

    async def requeue(self, job_id, owner, ready_at, fields, event):
        entry = self._entry(job_id)
        if not self._held(entry, owner):
            return False
        for key, value in fields.items():
            setattr(entry.record, key, value)
        entry.record.state, entry.record.owner = QUEUED, ""
        entry.lease_until = 0.0
        self._delayed[job_id] = ready_at
        self._append(entry, event)
        await self._notify()
        return True

    async def finish(self, job_id, owner, state, fields, event, *, result, result_ttl_s, record_ttl_s):
        entry = self._entry(job_id)
        if entry is None or entry.record.state in TERMINAL_STATES:
            return False
        if owner:
            if not self._held(entry, owner):
                return False
        elif entry.record.state == RUNNING and entry.lease_until > self._clock():
            return False
        for key, value in fields.items():
            setattr(entry.record, key, value)
        entry.record.state, entry.record.owner, entry.record.result = state, "", result
        entry.lease_until = 0.0
        self._delayed.pop(job_id, None)
        self._queued.get(entry.record.capability, set()).discard(job_id)
        now = self._clock()
        entry.expire_at = now + record_ttl_s
        entry.result_expire_at = now + result_ttl_s
        self._append(entry, event)
        await self._notify()
        return True

    async def request_cancel(self, job_id):
        entry = self._entry(job_id)
        if entry is None:
            return None
        if entry.record.state not in TERMINAL_STATES:
            entry.record.cancel_requested = True
        return self._view(entry)

    async def promote_due(self, now):
        woken = []
        for job_id, ready_at in list(self._delayed.items()):
            if ready_at > now:
                continue
            del self._delayed[job_id]
            entry = self._entry(job_id)
            if entry is not None and entry.record.state == QUEUED and not entry.record.cancel_requested:
                self._enqueue(entry.record.capability, job_id, entry.score)
                woken.append(entry.record.capability)
        return woken

    async def recover_expired(self, event):
        found = []
        now = self._clock()
        for job_id, entry in list(self._jobs.items()):
            record = entry.record
            if record.state != RUNNING or entry.lease_until > now:
                continue
            if record.cancel_requested:
                found.append((job_id, True))
                continue
            record.state, record.owner, record.backend_id = QUEUED, "", ""
            self._enqueue(record.capability, job_id, entry.score)
            lost = copy.deepcopy(event)
            lost.job_id, lost.attempt = job_id, record.attempt
            self._append(entry, lost)
            found.append((job_id, False))
        if found:
            await self._notify()
        return found

    async def overdue(self, now):
        return [
            job_id
            for job_id, e in list(self._jobs.items())
            if e.record.state not in TERMINAL_STATES and e.record.deadline <= now
        ]

    async def compact(self, finished_before):
        pass  # events are kept as they came, in this process's memory: nothing to rewrite

    def validate_event_id(self, event_id):
        if event_id and not event_id.isdigit():
            raise InvalidArgument.single("after_event_id", "is not an event id of this job", reason="INVALID_EVENT_ID")

    async def events_after(self, job_id, after, block_s):
        self.validate_event_id(after)
        start = int(after or 0)

        def ready():
            entry = self._entry(job_id)
            return entry is None or len(entry.events) > start

        if block_s > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(ready), block_s)
        entry = self._entry(job_id)
        return [(e.event_id, copy.deepcopy(e)) for e in entry.events[start:]] if entry else []

    async def publish(self, signal):
        if self._on_signal is not None:
            outcome = self._on_signal(signal)
            if inspect.isawaitable(outcome):
                await outcome

    async def start(self, on_signal):
        self._on_signal = on_signal

    async def close(self):
        self._on_signal = None

"""Runs jobs: claims them from the per-capability priority queues, calls the capability through
the gateway's router, records progress and outcome, retries, cancels and recovers.

Capacity: a gateway runs at most `capacity(capability)` jobs of a capability at once (the sum of
its backends' max_concurrency). Jobs beyond that wait in the job queue, where priority decides,
rather than in the router's FIFO wait queue, where priority would be lost and the wait limit would
turn a long job queue into RESOURCE_EXHAUSTED failures.

Leases: a claimed job carries a lease renewed by a heartbeat every lease/3 seconds for as long as
its runner lives, however long the job takes. When a gateway dies its leases expire and any
gateway's maintenance tick puts the job back in its queue (at-least-once). Writes of an attempt
are fenced by the lease, so a runner that lost its lease stops and cannot overwrite the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Callable

import structlog
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from redis.exceptions import RedisError

from capmesh.gateway.server import metrics
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.jobs.artifacts import ArtifactCollector
from capmesh.gateway.server.jobs.methods import resolve_method
from capmesh.gateway.server.jobs.policy import StreamEndedEarly, backoff_s, classify
from capmesh.gateway.server.jobs.record import (
    CANCELLED,
    FAILED,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    cancelled_status,
    make_event,
    new_job_id,
    pack,
)
from capmesh.gateway.server.jobs.store import JobStore, QueueFull
from capmesh.gateway.server.routing.router import Router
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Violations,
)
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.jobs")

E = jobs_pb2  # event and state names read better as E.JOB_EVENT_TYPE_...
MAX_ATTEMPTS_LIMIT = 10
# A finished job's events are compacted (JobStore.compact) this long after its end: by then every
# watcher has read its last event (a watcher waits on new events for WATCH_BLOCK_S, 2 s, at a time).
COMPACT_AFTER_S = 60.0
MAX_LABELS = 64


def tick_s(settings: GatewaySettings) -> float:
    """How often promotion, recovery and deadlines are checked (signals wake it sooner)."""
    return min(1.0, settings.job_lease_s / 3)


def shutdown_s(settings: GatewaySettings) -> float:
    """How long a stopping gateway waits to hand its running jobs back."""
    return min(5.0, settings.job_lease_s)


def new_owner_id(instance_id: str = "") -> str:
    """Unique per process start, so a restarted gateway never mistakes the leases of its earlier run for its own."""
    return f"{instance_id or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class _Attempt:
    """One running attempt: why it is being stopped, and its writes kept in order."""

    def __init__(self, record: JobRecord, task: asyncio.Task) -> None:
        self.record = record
        self.task = task
        self.stop_reason = ""
        self.backend_id = ""
        self.started = False
        self._last_write: asyncio.Task | None = None

    def stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
            self.task.cancel()

    def write(self, coro) -> None:
        """Queues a store write behind the previous ones (STARTED before PROGRESS, always)."""
        previous = self._last_write

        async def chained():
            if previous is not None:
                await previous
            if not await coro:
                self.stop("lease_lost")

        self._last_write = asyncio.ensure_future(chained())

    async def drain(self) -> None:
        if self._last_write is not None:
            await self._last_write


class JobScheduler:
    def __init__(
        self,
        store: JobStore,
        router: Router,
        files: FileStore,
        settings: GatewaySettings,
        *,
        capacity: Callable[[str], int],
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.files = files
        self.settings = settings
        self.capacity = capacity
        self.owner = owner or new_owner_id()
        self._attempts: dict[str, _Attempt] = {}
        self._attempt_tasks: set[asyncio.Task[None]] = set()  # asyncio holds tasks only weakly
        self._running: dict[str, int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- submission and control -----------------------------------------------------------------
    def _validate(self, request: jobs_pb2.SubmitJobRequest) -> tuple[str, int, float]:
        violations = Violations()
        method = None
        try:
            method = resolve_method(request.method)
        except InvalidArgument as exc:
            violations.items.extend(exc.violations)
        if method is not None:
            if not request.HasField("request") or not request.request.type_url:
                violations.add("request", f"is required: pack a {method.request_type}")
            elif request.request.TypeName() != method.request_type:
                violations.add(
                    "request", f"packs {request.request.TypeName()} but {request.method} takes {method.request_type}"
                )
        violations.check(
            PRIORITY_MIN <= request.priority <= PRIORITY_MAX,
            "priority",
            f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}",
        )
        violations.check(
            0 <= request.max_attempts <= MAX_ATTEMPTS_LIMIT,
            "max_attempts",
            f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, or 0 for the default",
        )
        violations.check(0 <= request.timeout_seconds < 1e9, "timeout_seconds", "must be 0 (the default) or more")
        violations.check(len(request.request_id) <= 128, "request_id", "must be at most 128 characters")
        violations.check(len(request.labels) <= MAX_LABELS, "labels", f"at most {MAX_LABELS} labels")
        for key, value in request.labels.items():
            violations.check(
                0 < len(key) <= 63 and key.replace("_", "").replace("-", "").replace(".", "").isalnum(),
                f"labels[{key}]",
                "keys are 1 to 63 letters, digits, '_', '-' or '.'",
            )
            violations.check(len(value) <= 256, f"labels[{key}]", "values are at most 256 characters")
        violations.raise_if_any()
        try:
            capability = self.router.capability_of(request.method)
        except NotFound:
            raise InvalidArgument.single(
                "method", f"no capability serves {request.method}", reason="UNKNOWN_METHOD"
            ) from None
        return (
            capability,
            request.max_attempts or self.settings.job_max_attempts,
            request.timeout_seconds or self.settings.job_timeout_s,
        )

    async def submit(self, request: jobs_pb2.SubmitJobRequest) -> tuple[JobRecord, bool]:
        capability, max_attempts, timeout_s = self._validate(request)
        now = time.time()
        record = JobRecord(
            job_id=new_job_id(),
            capability=capability,
            method=request.method,
            request=request.request.SerializeToString(),
            priority=request.priority,
            labels=dict(request.labels),
            request_id=request.request_id,
            max_attempts=max_attempts,
            create_time=now,
            deadline=now + timeout_s,
        )
        submitted = {"capmesh.job_id": record.job_id, "capmesh.method": record.method}
        record.traceparent = telemetry.mark("job submit", submitted)  # "" while tracing is off
        event = make_event(record.job_id, E.JOB_EVENT_TYPE_QUEUED, QUEUED, message="queued", when=now)
        try:
            stored, created = await self.store.submit(
                record,
                event,
                queue_limit=self.settings.job_queue_limit,
                hold_s=timeout_s + self.settings.job_record_ttl_s,
            )
        except QueueFull as full:
            raise ResourceExhausted(
                f"the {capability} job queue is full ({full.queued} jobs); try again later",
                retry_after_s=max(1.0, self.settings.job_backoff_base_s),
                reason="JOB_QUEUE_FULL",
                metadata={"capability": capability},
            ) from None
        if created:
            log.info("job.submitted", job_id=stored.job_id, capability=capability, priority=request.priority)
            await self.store.publish(f"wake:{capability}")
        return stored, created

    async def get(self, job_id: str) -> JobRecord:
        record = await self.store.get(job_id) if job_id else None
        if record is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", reason="JOB_NOT_FOUND")
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        record = await self.store.request_cancel(job_id)
        if record is None:
            raise NotFound(f"job {job_id!r} does not exist or has expired", reason="JOB_NOT_FOUND")
        if not record.done and not await self._finish_unowned(
            record, CANCELLED, cancelled_status(), "cancelled while queued"
        ):
            await self.store.publish(f"cancel:{job_id}")  # running: its runner stops the backend call
        return await self.get(job_id)

    async def delete(self, job_id: str) -> None:
        record = await self.get(job_id)
        if not record.done:
            raise FailedPrecondition(
                f"job {job_id} is still {jobs_pb2.JobState.Name(record.state)}; cancel it first", reason="JOB_NOT_DONE"
            )
        await self.store.delete(job_id)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.start(self._on_signal)
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="capmesh-jobs-dispatch"),
            asyncio.create_task(self._maintenance_loop(), name="capmesh-jobs-maintenance"),
        ]
        log.info("jobs.started", owner=self.owner, durable=self.store.durable)

    async def stop(self) -> None:
        await stop_tasks(self._tasks, shutdown_s(self.settings))
        attempts = list(self._attempts.values())
        for attempt in attempts:
            attempt.stop("shutdown")  # handed back at once rather than after the lease expires
        # Handing back is a courtesy: a job whose hand-back does not finish in time is taken up by
        # another runner when its lease expires, so a stuck write never holds up the shutdown.
        if attempts:
            _, pending = await asyncio.wait([a.task for a in attempts], timeout=shutdown_s(self.settings))
            for task in pending:
                log.warning("jobs.hand_back_timed_out", note="the job's lease will expire and it runs again")
                task.cancel()
        try:
            async with asyncio.timeout(shutdown_s(self.settings)):
                await self.store.close()
        except TimeoutError:
            log.warning("jobs.store_close_timed_out")

    def wake(self) -> None:
        self._wake.set()

    async def _on_signal(self, signal: str) -> None:
        kind, _, value = signal.partition(":")
        if kind == "wake":
            self.wake()
        elif kind == "cancel" and value in self._attempts:
            self._attempts[value].stop("cancel")

    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._dispatch_once()
            except (RedisError, OSError) as exc:
                log.warning("jobs.dispatch_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick_s(self.settings))

    async def _dispatch_once(self) -> None:
        await self.store.promote_due(time.time())  # retries whose backoff ended (a timer woke us)
        for capability in await self.store.capabilities():
            while self._running[capability] < self.capacity(capability):
                record = await self.store.claim(capability, self.owner, self.settings.job_lease_s, time.time())
                if record is None:
                    break
                self._running[capability] += 1
                metrics.jobs_by_state.labels("running").inc()
                task = asyncio.create_task(self._run(record), name=f"capmesh-job-{record.job_id}")
                self._attempt_tasks.add(task)
                task.add_done_callback(self._attempt_tasks.discard)

    async def _maintenance_loop(self) -> None:
        lost = make_event(
            "",
            E.JOB_EVENT_TYPE_RETRYING,
            QUEUED,
            error=status_pb2.Status(
                code=code_pb2.UNAVAILABLE, message="the gateway running this attempt stopped (its lease expired)"
            ),
            message="the gateway running the attempt stopped; queued again",
        )
        while True:
            try:
                now = time.time()
                lost.time.FromNanoseconds(int(now * 1e9))
                for job_id, cancelled in await self.store.recover_expired(lost):
                    if cancelled:
                        record = await self.store.get(job_id)
                        if record is not None:
                            await self._finish_unowned(record, CANCELLED, cancelled_status(), "cancelled")
                    else:
                        log.warning("job.recovered", job_id=job_id)
                        self.wake()
                for job_id in await self.store.overdue(now):
                    record = await self.store.get(job_id)
                    if record is not None and record.state == QUEUED:
                        await self._finish_unowned(
                            record,
                            FAILED,
                            status_pb2.Status(
                                code=code_pb2.DEADLINE_EXCEEDED, message="the job's deadline passed while it was queued"
                            ),
                            "deadline passed",
                        )
                await self.store.compact(now - COMPACT_AFTER_S)
                for capability in await self.store.capabilities():
                    metrics.job_queue_depth.labels(capability).set(await self.store.queue_length(capability))
            except (RedisError, OSError) as exc:
                log.warning("jobs.maintenance_failed", error=str(exc))
            await asyncio.sleep(tick_s(self.settings))

    # -- running one attempt --------------------------------------------------------------------
    async def _run(self, record: JobRecord) -> None:
        task = asyncio.current_task()
        assert task is not None, "attempts run as tasks"
        attempt = _Attempt(record, task)
        self._attempts[record.job_id] = attempt
        heartbeat = asyncio.create_task(self._heartbeat(attempt))
        try:
            attributes = {"capmesh.job_id": record.job_id, "capmesh.attempt": record.attempt}
            with telemetry.span_under(record.traceparent, f"job attempt {record.method}", attributes):
                await self._attempt(attempt)
        except Exception:
            log.exception("job.runner_failed", job_id=record.job_id)
        finally:
            heartbeat.cancel()
            self._attempts.pop(record.job_id, None)
            self._running[record.capability] -= 1
            metrics.jobs_by_state.labels("running").dec()
            self.wake()

    async def _heartbeat(self, attempt: _Attempt) -> None:
        record = attempt.record
        while True:
            await asyncio.sleep(self.settings.job_lease_s / 3)
            try:
                held, cancel = await self.store.renew(record.job_id, self.owner, self.settings.job_lease_s)
            except (RedisError, OSError) as exc:
                log.warning("job.heartbeat_failed", job_id=record.job_id, error=str(exc))
                continue
            if not held:
                log.warning("job.lease_lost", job_id=record.job_id)
                attempt.stop("lease_lost")
                return
            if cancel:
                attempt.stop("cancel")
                return

    async def _attempt(self, attempt: _Attempt) -> None:
        record = attempt.record
        collector = ArtifactCollector(self.files, record.job_id, self.settings.job_result_ttl_s)
        try:
            # A cancel published between the claim and this attempt's registration found no attempt
            # to stop; its flag is in the store, so read it once now rather than at the next
            # heartbeat (lease/3 later, while the backend call would run).
            current = await self.store.get(record.job_id)
            if current is not None and current.cancel_requested:
                attempt.stop_reason = "cancel"
                raise asyncio.CancelledError
            remaining = record.deadline - time.time()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                result_message = await self._call(attempt, collector, remaining)
            artifacts = await collector.commit(result_message)  # also sets the file ids in result_message
            await attempt.drain()
            result = jobs_pb2.JobResult(response=pack(result_message), artifacts=artifacts)
            await self._finish(
                attempt, SUCCEEDED, E.JOB_EVENT_TYPE_SUCCEEDED, None, result, f"succeeded on attempt {record.attempt}"
            )
        except asyncio.CancelledError:
            await collector.abort()
            await self._stopped(attempt)
        except TimeoutError:
            await collector.abort()
            await self._finish(
                attempt,
                FAILED,
                E.JOB_EVENT_TYPE_FAILED,
                status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="the job's deadline passed"),
                None,
                "deadline passed",
            )
        except Exception as exc:
            await collector.abort()
            await self._failed(attempt, exc)

    async def _call(self, attempt: _Attempt, collector: ArtifactCollector, timeout_s: float):
        """Runs the call through the router; returns its result message (or a unary method's response)."""
        record = attempt.record
        method = resolve_method(record.method)
        payload = any_pb2.Any.FromString(record.request).value
        result = None
        stream = self.router.call(
            method.path,
            payload,
            metadata=(("x-request-id", record.job_id),),
            deadline=time.monotonic() + timeout_s,
            on_backend=lambda backend_id: self._started(attempt, backend_id),
        )
        async with stream:
            async for raw in stream:
                if not attempt.started:
                    self._started(attempt, "")
                try:
                    message = method.response_class.FromString(raw)
                except DecodeError as exc:
                    raise StreamEndedEarly(f"the backend sent an unreadable message: {exc}") from exc
                if not method.server_streaming:  # a unary method: its one response is the result
                    result = message
                    continue
                kind = message.WhichOneof("event")
                if kind == "progress":
                    self._progress(attempt, message.progress)
                elif kind == "chunk":
                    await collector.add(message.chunk)
                elif kind == "result":
                    result = message.result
        if result is None:
            raise StreamEndedEarly(f"the stream from backend {attempt.backend_id or '?'} ended without a result")
        return result

    def _started(self, attempt: _Attempt, backend_id: str) -> None:
        record = attempt.record
        attempt.started, attempt.backend_id = True, backend_id or attempt.backend_id
        where = f" on backend {backend_id}" if backend_id else ""
        event = record.event(
            E.JOB_EVENT_TYPE_STARTED,
            RUNNING,
            message=f"attempt {record.attempt} of {record.max_attempts} started{where}",
        )
        attempt.write(self.store.record(record.job_id, self.owner, {"backend_id": backend_id}, event))

    def _progress(self, attempt: _Attempt, progress) -> None:
        record = attempt.record
        event = record.event(
            E.JOB_EVENT_TYPE_PROGRESS,
            RUNNING,
            progress=progress,
            message=progress.message or progress.stage,
        )
        attempt.write(self.store.record(record.job_id, self.owner, {"progress": progress.SerializeToString()}, event))

    async def _failed(self, attempt: _Attempt, exc: BaseException) -> None:
        record = attempt.record
        status, retryable, hint = classify(exc)
        where = f" on backend {attempt.backend_id}" if attempt.backend_id else ""
        what = f"attempt {record.attempt}{where} failed: {code_pb2.Code.Name(status.code)}: {status.message}"
        if retryable and record.attempt < record.max_attempts:
            settings = self.settings
            delay = backoff_s(record.attempt, settings.job_backoff_base_s, settings.job_backoff_max_s, hint)
            if time.time() + delay < record.deadline:
                await attempt.drain()
                event = record.event(
                    E.JOB_EVENT_TYPE_RETRYING,
                    QUEUED,
                    error=status,
                    message=f"{what}; retrying in {delay:.2f}s",
                )
                fields = {"error": status.SerializeToString(), "backend_id": ""}
                if await self.store.requeue(record.job_id, self.owner, time.time() + delay, fields, event):
                    log.info(
                        "job.retrying",
                        job_id=record.job_id,
                        attempt=record.attempt,
                        delay_s=round(delay, 2),
                        code=code_pb2.Code.Name(status.code),
                    )
                    asyncio.get_running_loop().call_later(delay, self.wake)
                return
        await self._finish(attempt, FAILED, E.JOB_EVENT_TYPE_FAILED, status, None, what)

    async def _stopped(self, attempt: _Attempt) -> None:
        """The attempt's task was cancelled: by a cancel request, a lost lease or a stopping gateway."""
        record = attempt.record
        reason = attempt.stop_reason
        if reason == "cancel":
            await self._finish(
                attempt,
                CANCELLED,
                E.JOB_EVENT_TYPE_CANCELLED,
                cancelled_status(),
                None,
                f"cancelled during attempt {record.attempt}",
            )
        elif reason == "shutdown":
            event = record.event(
                E.JOB_EVENT_TYPE_RETRYING,
                QUEUED,
                error=status_pb2.Status(code=code_pb2.UNAVAILABLE, message="the gateway stopped"),
                message="the gateway running the attempt stopped; queued again",
            )
            with contextlib.suppress(RedisError, OSError):
                await self.store.requeue(record.job_id, self.owner, time.time(), {"backend_id": ""}, event)
        elif reason != "lease_lost":
            raise asyncio.CancelledError

    async def _finish(
        self,
        attempt: _Attempt,
        state: int,
        event_type: int,
        error: status_pb2.Status | None,
        result: jobs_pb2.JobResult | None,
        message: str,
    ) -> None:
        record = attempt.record
        with contextlib.suppress(asyncio.CancelledError):
            await attempt.drain()
        now = time.time()
        event = record.event(
            event_type,
            state,
            error=error,
            result=result,
            message=message,
            when=now,
        )
        fields = {"end_time": now, "error": error.SerializeToString() if error is not None else b""}
        if await self.store.finish(
            record.job_id,
            self.owner,
            state,
            fields,
            event,
            result=result.SerializeToString() if result is not None else b"",
            result_ttl_s=self.settings.job_result_ttl_s,
            record_ttl_s=self.settings.job_record_ttl_s,
        ):
            metrics.jobs_total.labels(record.capability, jobs_pb2.JobState.Name(state)).inc()
            log.info("job.finished", job_id=record.job_id, state=jobs_pb2.JobState.Name(state), message=message)

    async def _finish_unowned(self, record: JobRecord, state: int, error: status_pb2.Status, message: str) -> bool:
        """Ends a job no runner holds (queued, waiting for a retry, or whose runner died)."""
        event_type = E.JOB_EVENT_TYPE_CANCELLED if state == CANCELLED else E.JOB_EVENT_TYPE_FAILED
        now = time.time()
        event = record.event(event_type, state, error=error, message=message, when=now)
        done = await self.store.finish(
            record.job_id,
            "",
            state,
            {"end_time": now, "error": error.SerializeToString()},
            event,
            result=b"",
            result_ttl_s=self.settings.job_result_ttl_s,
            record_ttl_s=self.settings.job_record_ttl_s,
        )
        if done:
            metrics.jobs_total.labels(record.capability, jobs_pb2.JobState.Name(state)).inc()
            log.info("job.finished", job_id=record.job_id, state=jobs_pb2.JobState.Name(state), message=message)
        return done

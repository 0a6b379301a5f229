"""A job as stored: flat fields (so that Redis scripts can check state and ownership without
parsing protobuf) and their conversion to JobMetadata, JobEvent and google.longrunning.Operation."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, status_pb2

from capmesh.common.v1 import progress_pb2
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.services.runtime.errors import InvalidArgument

QUEUED = jobs_pb2.JOB_STATE_QUEUED
RUNNING = jobs_pb2.JOB_STATE_RUNNING
SUCCEEDED = jobs_pb2.JOB_STATE_SUCCEEDED
FAILED = jobs_pb2.JOB_STATE_FAILED
CANCELLED = jobs_pb2.JOB_STATE_CANCELLED
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
TERMINAL_EVENTS = frozenset(
    {jobs_pb2.JOB_EVENT_TYPE_SUCCEEDED, jobs_pb2.JOB_EVENT_TYPE_FAILED, jobs_pb2.JOB_EVENT_TYPE_CANCELLED}
)

OPERATION_PREFIX = "operations/"
PRIORITY_MIN, PRIORITY_MAX = -100, 100


def new_job_id() -> str:
    return secrets.token_hex(16)


def job_id_from_name(name: str, field_name: str = "name") -> str:
    """ "operations/<job_id>" -> job_id; anything else is INVALID_ARGUMENT."""
    if not name.startswith(OPERATION_PREFIX) or not name[len(OPERATION_PREFIX) :]:
        raise InvalidArgument.single(field_name, 'must be "operations/<job_id>"', reason="INVALID_OPERATION_NAME")
    return name[len(OPERATION_PREFIX) :]


def queue_score(priority: int, sequence: int) -> int:
    """Lower runs first: priority descending, then submission order.

    Kept under 12 digits so that it survives Redis' Lua number formatting (%.14g) exactly.
    """
    return (PRIORITY_MAX - priority) * 1_000_000_000 + sequence


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@dataclass
class JobRecord:
    job_id: str
    capability: str
    method: str
    request: bytes  # the packed google.protobuf.Any, serialized
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    max_attempts: int = 1
    create_time: float = 0.0
    deadline: float = 0.0  # epoch seconds
    state: int = QUEUED
    attempt: int = 0
    backend_id: str = ""
    owner: str = ""  # the gateway instance holding the lease of the current attempt
    start_time: float = 0.0
    end_time: float = 0.0
    progress: bytes = b""  # capmesh.common.v1.Progress
    error: bytes = b""  # google.rpc.Status
    cancel_requested: bool = False
    result: bytes = b""  # JobResult; kept apart from the record with its own retention
    # W3C traceparent of the submit span (tracing on): every attempt, on whichever gateway runs it
    # (after a restart too), is a span of the submitter's trace
    traceparent: str = ""
    queue_position: int = 0  # computed on read

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_fields(self) -> dict[str, bytes | str | int | float]:
        """The Redis hash of the record (the result lives in its own key)."""
        return {
            "capability": self.capability,
            "method": self.method,
            "request": self.request,
            "priority": self.priority,
            "labels": json.dumps(self.labels, sort_keys=True),
            "request_id": self.request_id,
            "max_attempts": self.max_attempts,
            "create_time": repr(self.create_time),
            "deadline": repr(self.deadline),
            "state": self.state,
            "attempt": self.attempt,
            "backend_id": self.backend_id,
            "owner": self.owner,
            "start_time": repr(self.start_time),
            "end_time": repr(self.end_time),
            "progress": self.progress,
            "error": self.error,
            "cancel": int(self.cancel_requested),
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_fields(cls, job_id: str, raw: dict[bytes, bytes], result: bytes | None) -> JobRecord:
        text = {k.decode(): v for k, v in raw.items()}

        def s(key: str) -> str:
            return text.get(key, b"").decode()

        return cls(
            job_id=job_id,
            capability=s("capability"),
            method=s("method"),
            request=text.get("request", b""),
            priority=int(s("priority") or 0),
            labels=json.loads(s("labels") or "{}"),
            request_id=s("request_id"),
            max_attempts=int(s("max_attempts") or 1),
            create_time=float(s("create_time") or 0),
            deadline=float(s("deadline") or 0),
            state=int(s("state") or QUEUED),
            attempt=int(s("attempt") or 0),
            backend_id=s("backend_id"),
            owner=s("owner"),
            start_time=float(s("start_time") or 0),
            end_time=float(s("end_time") or 0),
            progress=text.get("progress", b""),
            error=text.get("error", b""),
            cancel_requested=s("cancel") == "1",
            traceparent=s("traceparent"),
            result=result or b"",
        )

    def event(self, type_: int, state: int, **fields: Any) -> jobs_pb2.JobEvent:
        """An event of this job's current attempt; `fields` are those of `make_event`."""
        return make_event(self.job_id, type_, state, attempt=self.attempt, **fields)

    def metadata(self) -> jobs_pb2.JobMetadata:
        meta = jobs_pb2.JobMetadata(
            job_id=self.job_id,
            capability=self.capability,
            method=self.method,
            state=_job_state(self.state),
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            priority=self.priority,
            labels=self.labels,
            request_id=self.request_id,
            create_time=timestamp(self.create_time),
            backend_id=self.backend_id,
            queue_position=self.queue_position if self.state == QUEUED else 0,
        )
        if self.progress:
            meta.progress.ParseFromString(self.progress)
        if self.state == QUEUED:
            meta.progress.queue_position = self.queue_position
        if self.start_time:
            meta.start_time.CopyFrom(timestamp(self.start_time))
        if self.end_time:
            meta.end_time.CopyFrom(timestamp(self.end_time))
        return meta

    def operation(self) -> operations_pb2.Operation:
        op = operations_pb2.Operation(
            name=OPERATION_PREFIX + self.job_id, done=self.done, metadata=pack(self.metadata())
        )
        if self.state == SUCCEEDED:
            if self.result:
                result = jobs_pb2.JobResult.FromString(self.result)
                op.response.Pack(result)
            else:
                op.error.CopyFrom(
                    status_pb2.Status(code=code_pb2.NOT_FOUND, message="the job succeeded but its result has expired")
                )
        elif self.state in (FAILED, CANCELLED):
            op.error.ParseFromString(self.error or cancelled_status().SerializeToString())
        return op


def cancelled_status(message: str = "the job was cancelled") -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.CANCELLED, message=message)


def _job_state(state: int) -> jobs_pb2.JobState:
    # The generated stubs type enum fields by their enum class; the values are plain ints.
    return cast(jobs_pb2.JobState, state)


def make_event(
    job_id: str,
    type_: int,
    state: int,
    *,
    attempt: int = 0,
    message: str = "",
    progress: progress_pb2.Progress | None = None,
    error: status_pb2.Status | None = None,
    result: jobs_pb2.JobResult | None = None,
    when: float | None = None,
) -> jobs_pb2.JobEvent:
    event = jobs_pb2.JobEvent(
        job_id=job_id,
        type=cast(jobs_pb2.JobEventType, type_),
        state=_job_state(state),
        attempt=attempt,
        message=message,
        time=timestamp(time.time() if when is None else when),
    )
    if progress is not None:
        event.progress.CopyFrom(progress)
    if error is not None:
        event.error.CopyFrom(error)
    if result is not None:
        event.result.CopyFrom(result)
    return event

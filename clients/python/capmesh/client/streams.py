"""Reading a generation stream: progress events, DataChunk pieces of files, then the result.

Every streamed file is checked as it arrives (each chunk starts where the previous one ended) and
once complete (its size and sha256 against the result's Artifact), so a broken stream never yields
a file that merely looks right; a broken stream is a DATA_LOSS `ServerError`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from capmesh.client.errors import ServerError, from_rpc_error
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.gateway.v1 import job_service_pb2, job_service_pb2_grpc

RESUME_WINDOW_S = 30.0  # how long a cut WatchJob keeps trying to resume before it gives up
RESUME_BACKOFF_S = (0.05, 1.0)  # the first and the longest wait between two resumptions


def stream_broken(service: str, what: str) -> ServerError:
    return ServerError(code=grpc.StatusCode.DATA_LOSS, message=f"{service} stream broken: {what}")


class StreamedFile:
    """One file received as chunks at increasing offsets."""

    def __init__(self, service: str, label: str = "") -> None:
        self._service = service
        self._prefix = f"{label}: " if label else ""
        self._data = bytearray()

    def add(self, offset: int, data: bytes) -> None:
        if offset != len(self._data):
            raise stream_broken(self._service, f"{self._prefix}chunk at offset {offset}, expected {len(self._data)}")
        self._data += data

    def verified(self, artifact: artifact_pb2.Artifact) -> bytes:
        """The file's bytes, once they match the size and sha256 (where given) the result's Artifact announces."""
        data = bytes(self._data)
        if len(data) != artifact.size_bytes or (
            artifact.sha256 and hashlib.sha256(data).hexdigest() != artifact.sha256
        ):
            raise stream_broken(
                self._service,
                f"{self._prefix}received {len(data)} bytes that do not match the result's size and sha256",
            )
        return data


def receive(
    responses: Iterable,
    service: str,
    on_chunk: Callable[[artifact_pb2.DataChunk], None],
    on_progress: Callable[[progress_pb2.Progress], None] | None,
):
    """The stream's result message, passing each `chunk` to `on_chunk` and each `progress` to `on_progress`.

    `responses` is a server-streaming call whose messages have an `event` oneof of progress, chunk and
    result; a failed call raises the matching CapmeshClientError.
    """
    try:
        for message in responses:
            kind = message.WhichOneof("event")
            if kind == "progress" and on_progress is not None:
                on_progress(message.progress)
            elif kind == "chunk":
                on_chunk(message.chunk)
            elif kind == "result":
                return message.result
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc
    raise stream_broken(service, "the stream ended without a result")


def receive_file(
    responses: Iterable,
    service: str,
    on_progress: Callable[[progress_pb2.Progress], None] | None,
    on_chunk: Callable[[artifact_pb2.DataChunk], None] | None = None,
    artifact_of: Callable[[Any], artifact_pb2.Artifact] = lambda result: result.artifact,
) -> tuple[bytes, Any]:
    """(the one file the stream carries, verified against `artifact_of(result)`; the result message).

    `on_chunk`, when given, also sees each chunk as it arrives (e.g. to play audio while it streams).
    """
    file = StreamedFile(service)

    def add(chunk: artifact_pb2.DataChunk) -> None:
        file.add(chunk.offset, chunk.data)
        if on_chunk is not None:
            on_chunk(chunk)

    result = receive(responses, service, add, on_progress)
    return file.verified(artifact_of(result)), result


def watch_job(channel: grpc.Channel, job_id: str, after_event_id: str = "") -> Iterator[job_service_pb2.JobEvent]:
    """A job's events until its stream ends, resumed from the last event id when a gateway dies.

    A WatchJob cut with UNAVAILABLE (its gateway went away) is opened again after the last event
    seen; on a channel with several gateway addresses (failover.py) that lands on a live gateway,
    which reads the same job log from the shared store. No event is repeated or skipped. Gives up
    with the UNAVAILABLE error after RESUME_WINDOW_S without an event; other errors end it at once.
    """
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    last = after_event_id
    wait_s, deadline = RESUME_BACKOFF_S[0], 0.0
    while True:
        try:
            for response in stub.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id, after_event_id=last)):
                last = response.event.event_id
                wait_s, deadline = RESUME_BACKOFF_S[0], 0.0
                yield response.event
            return
        except grpc.RpcError as exc:
            now = time.monotonic()
            deadline = deadline or now + RESUME_WINDOW_S
            if exc.code() != grpc.StatusCode.UNAVAILABLE or now > deadline:
                raise
        time.sleep(wait_s)  # backoff while the channel finds a live gateway
        wait_s = min(wait_s * 2, RESUME_BACKOFF_S[1])

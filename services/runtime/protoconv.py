"""Conversions of the shared messages (progress, model information, artifacts)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from capmesh.common.v1 import artifact_pb2, model_pb2, progress_pb2
from capmesh.services.runtime.chunks import CHUNK_BYTES, FileChunk, ProducedFile, file_chunks
from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.runtime.lifecycle import ModelSlot, ModelState
from capmesh.services.runtime.progress import ProgressUpdate

R = TypeVar("R")
M = TypeVar("M", bound=Message)
# {engine event type: (the stream message's field for it, the event's conversion)}, for event_response.
EventFields = Mapping[type, tuple[str, Callable[[Any], Any]]]

_MODEL_STATES = {
    ModelState.UNLOADED: model_pb2.MODEL_STATE_UNLOADED,
    ModelState.LOADING: model_pb2.MODEL_STATE_LOADING,
    ModelState.LOADED: model_pb2.MODEL_STATE_LOADED,
    ModelState.FAILED: model_pb2.MODEL_STATE_FAILED,
}


def message_from(message_type: type[M], record: Any, **converted: Any) -> M:
    """A `message_type` message filled from the dataclass `record`: each field the two share by name
    is copied as it is (None leaves it unset), except those in `converted`, which come already in the
    message's form; fields the message lacks stay out. A result's fields that mean the same on both
    sides are so written once, in the domain record, not again in every conversion."""
    names = message_type.DESCRIPTOR.fields_by_name
    copied = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name in names and f.name not in converted and getattr(record, f.name) is not None
    }
    return message_type(**copied, **converted)


def progress_to_proto(update: ProgressUpdate) -> progress_pb2.Progress:
    return message_from(progress_pb2.Progress, update, percent=float(max(0.0, min(100.0, update.percent))))


def event_response(response_type: Callable[..., R], event: object, fields: EventFields) -> R:
    """One engine event as its stream message: a ProgressUpdate as `progress`, any other event as
    `response_type(**{name: to_proto(event)})` for the first `{EventType: (name, to_proto)}` it is an
    instance of. An event of no listed type is an engine bug (TypeError)."""
    if isinstance(event, ProgressUpdate):
        return response_type(progress=progress_to_proto(event))
    for event_type, (name, to_proto) in fields.items():
        if isinstance(event, event_type):
            return response_type(**{name: to_proto(event)})
    raise TypeError(f"unexpected engine event {type(event).__name__} for {getattr(response_type, '__name__', '')}")


def model_info_to_proto(status: ModelSlot, now: float | None = None) -> model_pb2.ModelInfo:
    now = time.monotonic() if now is None else now
    return model_pb2.ModelInfo(
        name=status.name,
        state=_MODEL_STATES[status.state],
        device=status.device,
        memory_bytes=status.memory_bytes,
        random_weights=status.random_weights,
        last_error=status.last_error,
        in_use=status.in_use,
        idle_seconds=max(0.0, now - status.last_used_at) if status.last_used_at else 0.0,
        details=status.details,
    )


def chunk_to_proto(chunk: FileChunk) -> artifact_pb2.DataChunk:
    return artifact_pb2.DataChunk(data=chunk.data, offset=chunk.offset, index=chunk.index)


def chunked(data: bytes, size: int = CHUNK_BYTES):
    """Yields (offset, piece) over `data` in pieces of at most `size` bytes."""
    for chunk in file_chunks(data, size):
        yield chunk.offset, chunk.data


def produced_file_to_proto(produced: ProducedFile) -> artifact_pb2.Artifact:
    """A result's description of a file whose bytes went out as chunks (so no `source` is set)."""
    return message_from(artifact_pb2.Artifact, produced)


class ArtifactResolver:
    """Turns an Artifact into bytes: inline data directly, a file id through the gateway's files.

    Services get a resolver whose `fetch_file(file_id) -> bytes` reads the gateway's file service
    (configured with the service's `gateway` setting); without one, file ids are refused.
    """

    def __init__(self, fetch_file=None) -> None:
        self._fetch_file = fetch_file

    async def read(self, artifact: artifact_pb2.Artifact, field: str) -> bytes:
        source = artifact.WhichOneof("source")
        if source == "inline_data":
            if not artifact.inline_data:
                raise InvalidArgument.single(f"{field}.inline_data", "must not be empty")
            return artifact.inline_data
        if source == "file_id":
            if self._fetch_file is None:
                raise InvalidArgument.single(
                    f"{field}.file_id", "file ids need a gateway: start the service with --gateway, or send inline_data"
                )
            return await self._fetch_file(artifact.file_id, field)
        raise InvalidArgument.single(field, "is required: set inline_data or file_id")

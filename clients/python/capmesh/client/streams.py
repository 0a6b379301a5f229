"""Reading a generation stream: progress events, DataChunk pieces of files, then the result.

Every streamed file is checked as it arrives (each chunk starts where the previous one ended) and
once complete (its size and sha256 against the result's Artifact), so a broken stream never yields
a file that merely looks right; a broken stream is a DATA_LOSS `ServerError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from capmesh.client.errors import ServerError, from_rpc_error
from capmesh.common.v1 import artifact_pb2, progress_pb2


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

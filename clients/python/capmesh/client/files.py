"""Uploading and downloading the gateway's stored files (capmesh.gateway.v1.FileService).

    from capmesh.client import sync_channel
    from capmesh.client.files import download_file, upload_file

    with sync_channel("127.0.0.1:50051") as channel:
        info = upload_file(channel, Path("portrait.png"), ttl_s=3600)
        download_file(channel, info.file_id, Path("copy.png"))

Chunks are 1 MiB, as the gateway's download pieces: measured against 2 and 3 MiB, larger messages
gained nothing on upload and lost on download (a message is handed over only once whole, so a
stream of fewer, larger ones overlaps sending and receiving less); far below the 4 MiB message
limit of any gRPC server or proxy on the way (the gateway refuses chunks of 4 MiB or more).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc

from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc

CHUNK_BYTES = 1024 * 1024

FileInfo = file_service_pb2.FileInfo


def upload_file(
    channel: grpc.Channel,
    path: Path,
    *,
    name: str = "",
    mime_type: str = "",
    ttl_s: float = 0.0,
    labels: Mapping[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> FileInfo:
    """Streams the file at `path` to the gateway; the stored file's description. `name` defaults to
    the file's own name; `on_progress` is told the size of each chunk as it is sent."""
    header = file_service_pb2.UploadHeader(
        name=name or path.name, mime_type=mime_type, ttl_seconds=ttl_s, labels=dict(labels or {})
    )

    def messages() -> Iterator[file_service_pb2.UploadFileRequest]:
        yield file_service_pb2.UploadFileRequest(header=header)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                if on_progress is not None:
                    on_progress(len(chunk))
                yield file_service_pb2.UploadFileRequest(chunk=chunk)

    return file_service_pb2_grpc.FileServiceStub(channel).UploadFile(messages()).file


def download_file(
    channel: grpc.Channel,
    file_id: str,
    target: Path | Callable[[FileInfo], Path],
    *,
    offset: int = 0,
    length: int = 0,
) -> tuple[FileInfo, Path, int]:
    """Writes the file, or `length` bytes of it from `offset` (0: to the end), to `target`, or to
    the path `target` picks from the file's description; (the description, that path, bytes
    written). Nothing is written when the gateway refuses (grpc.RpcError)."""
    stream = file_service_pb2_grpc.FileServiceStub(channel).DownloadFile(
        file_service_pb2.DownloadFileRequest(file_id=file_id, offset=offset, length=length)
    )
    first = next(stream)  # the first message carries the description
    path = target if isinstance(target, Path) else target(first.file)
    written = 0
    with path.open("wb") as handle:
        for message in itertools.chain([first], stream):
            data = message.data  # each read of the field is a fresh copy: once
            handle.write(data)
            written += len(data)
    return first.file, path, written

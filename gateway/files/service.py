"""capmesh.gateway.v1.FileService over the FileStore, and the sweeper that deletes expired files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.blobs import S3Blobs
from capmesh.gateway.server.files.index import RedisFileIndex
from capmesh.gateway.server.files.store import FileStore, default_files_dir
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc
from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.files")

SERVICE_NAME = file_service_pb2.DESCRIPTOR.services_by_name["FileService"].full_name
SWEEP_INTERVAL_MAX_S = 60.0
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # the protocol's message limit: an upload's chunks are smaller
# The longest file lifetime: a century is beyond any use and keeps the expiry a valid Timestamp.
MAX_TTL_S = 100 * 365 * 24 * 3600.0


def ttl_problem(ttl_s: float) -> str:
    """What is wrong with an upload's `ttl_seconds` (empty when nothing is): a number of seconds
    from 0 (the gateway default) to MAX_TTL_S; nan and infinity are not lifetimes."""
    if not 0 <= ttl_s <= MAX_TTL_S:  # false for nan too
        return f"must be a number of seconds from 0 (the default) to {MAX_TTL_S:.0f}, not {ttl_s}"
    return ""


class FileServicer(file_service_pb2_grpc.FileServiceServicer):
    def __init__(self, store: FileStore) -> None:
        self.store = store

    async def UploadFile(self, request_iterator, context):
        upload = None
        try:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if upload is None:
                    if part != "header":
                        raise InvalidArgument.single(
                            "header", "the first message must be the header", reason="UPLOAD_HEADER_MISSING"
                        )
                    header = message.header
                    problem = ttl_problem(header.ttl_seconds)
                    if problem:
                        raise InvalidArgument.single("header.ttl_seconds", problem, reason="INVALID_TTL")
                    upload = self.store.open_upload(
                        header.name, header.mime_type, header.ttl_seconds, dict(header.labels)
                    )
                elif part == "header":
                    raise InvalidArgument.single("header", "must be sent once, first", reason="UPLOAD_HEADER_REPEATED")
                else:
                    chunk = message.chunk  # each read of the field is a fresh copy: once
                    if len(chunk) >= MAX_CHUNK_BYTES:
                        raise InvalidArgument.single(
                            "chunk", f"must be smaller than {MAX_CHUNK_BYTES} bytes (4 MiB)", reason="CHUNK_TOO_LARGE"
                        )
                    await upload.write(chunk)
            if upload is None:
                raise InvalidArgument.single(
                    "header", "an upload needs a header message", reason="UPLOAD_HEADER_MISSING"
                )
            info = await upload.commit()
            upload = None
            return file_service_pb2.UploadFileResponse(file=info)
        finally:
            if upload is not None:  # failed or cancelled midway: leave nothing behind
                await upload.abort()

    async def DownloadFile(self, request, context):
        info, pieces = await self.store.read(request.file_id, request.offset, request.length)
        first = True
        async for offset, piece in pieces:
            yield file_service_pb2.DownloadFileResponse(file=info if first else None, data=piece, offset=offset)
            first = False
        if first:  # an empty range still describes the file
            yield file_service_pb2.DownloadFileResponse(file=info, offset=request.offset)

    async def GetFile(self, request, context):
        return file_service_pb2.GetFileResponse(file=await self.store.stat(request.file_id))

    async def ListFiles(self, request, context):
        files, token = await self.store.list(request.page_size, request.page_token)
        return file_service_pb2.ListFilesResponse(files=files, next_page_token=token)

    async def DeleteFile(self, request, context):
        await self.store.delete(request.file_id)
        return file_service_pb2.DeleteFileResponse()


class Sweeper:
    """Deletes expired files now and then; reads refuse expired files in between."""

    def __init__(self, store: FileStore, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._store.sweep()
            except Exception:  # a failed sweep (Redis away) must not stop the next one
                log.exception("files.sweep_failed")
            await asyncio.sleep(self._interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="capmesh-files-sweeper")

    async def stop(self) -> None:
        await stop_tasks([self._task])


def build_file_store(settings: GatewaySettings, redis: Any) -> FileStore:
    """Local folder and sidecar descriptions by default; a bucket and Redis descriptions are what
    several gateways share (the folder then only holds uploads in progress)."""
    root = Path(settings.files_dir).expanduser() if settings.files_dir else default_files_dir()
    index = RedisFileIndex(redis) if redis is not None else None
    blobs = None
    if settings.files_url:
        blobs = S3Blobs.from_url(settings.files_url)
        blobs.check_bucket()
    return FileStore(root, index, blobs, default_ttl_s=settings.file_ttl_s, max_bytes=settings.max_file_bytes)


def sweep_interval_s(file_ttl_s: float) -> float:
    """A quarter of the default file lifetime, between 1 s and `SWEEP_INTERVAL_MAX_S`."""
    return min(SWEEP_INTERVAL_MAX_S, max(1.0, file_ttl_s / 4))

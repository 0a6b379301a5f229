"""Stored files: descriptions in a FileIndex, bytes in Blobs (a folder or a bucket), with expiry and
a size limit.

Layout under the store folder: `partial/<id>` (uploads in progress, handed to the blobs when
complete), `blobs/<id>` (content, when the blobs are local), and `meta/<id>.json` when the index is
the sidecar one. Every path is built from a validated id, and checked to stay inside the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import structlog
from google.protobuf import timestamp_pb2

from capmesh.gateway.server.files.blobs import Blobs, LocalBlobs, missing_bytes
from capmesh.gateway.server.files.detect import HEAD_BYTES, detect_mime_type
from capmesh.gateway.server.files.ids import new_file_id, validate_file_id
from capmesh.gateway.server.files.index import (
    FileIndex,
    FileInfo,
    SidecarFileIndex,
    decode_page_token,
    encode_page_token,
)
from capmesh.services.runtime.errors import InvalidArgument, NotFound
from capmesh.services.runtime.paths import capmesh_home

log = structlog.get_logger("capmesh.files")

MiB = 1024 * 1024
MAX_CHUNK_BYTES = 4 * MiB  # the protocol's message limit; uploads send less than this per message
DOWNLOAD_CHUNK_BYTES = MiB
MAX_LABELS = 32
ABANDONED_UPLOAD_S = 24 * 3600.0  # an upload untouched this long belongs to a process that died


def default_files_dir(environ: Mapping[str, str] | None = None) -> Path:
    return capmesh_home(environ) / "files"


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class Upload:
    """One file being written: `write` chunks in order, then `commit` (or `abort`)."""

    def __init__(
        self, store: FileStore, name: str, declared_mime_type: str, ttl_s: float, labels: Mapping[str, str]
    ) -> None:
        self.file_id = new_file_id()
        self._store = store
        self._name = name
        self._declared = declared_mime_type
        self._ttl_s = ttl_s
        self._labels = dict(labels)
        self._path = store.partial_path(self.file_id)
        self._handle = open(self._path, "wb")  # noqa: SIM115 - closed by commit/abort
        self._digest = hashlib.sha256()
        self._head = bytearray()
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        if len(chunk) >= MAX_CHUNK_BYTES:
            raise InvalidArgument.single(
                "chunk", f"must be smaller than {MAX_CHUNK_BYTES} bytes (4 MiB)", reason="CHUNK_TOO_LARGE"
            )
        if self.size + len(chunk) > self._store.max_bytes:
            raise InvalidArgument.single(
                "chunk", f"the file exceeds the limit of {self._store.max_bytes} bytes", reason="FILE_TOO_LARGE"
            )
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self.size += len(chunk)
        await asyncio.to_thread(self._hash_and_write, chunk)  # both off the event loop

    def _hash_and_write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._handle.write(chunk)

    async def commit(self) -> FileInfo:
        await asyncio.to_thread(self._handle.close)
        now = self._store.clock()
        info = FileInfo(
            file_id=self.file_id,
            name=self._name,
            size_bytes=self.size,
            sha256=self._digest.hexdigest(),
            mime_type=detect_mime_type(bytes(self._head), self._declared, complete=self.size <= HEAD_BYTES),
            create_time=_timestamp(now),
            expire_time=_timestamp(now + self._ttl_s),
            labels=self._labels,
        )
        try:
            await self._store.blobs.put(self.file_id, self._path)
        except BaseException:
            await asyncio.to_thread(self._path.unlink, True)
            raise
        await self._store.index.put(info)
        log.info("file.stored", file_id=self.file_id, size=self.size, mime_type=info.mime_type)
        return info

    async def abort(self) -> None:
        await asyncio.to_thread(self._handle.close)
        await asyncio.to_thread(self._path.unlink, True)


class FileStore:
    def __init__(
        self,
        root: Path,
        index: FileIndex | None = None,
        blobs: Blobs | None = None,
        *,
        default_ttl_s: float = 24 * 3600.0,
        max_bytes: int = 1024 * MiB,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root.resolve()
        for sub in ("partial", "meta"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.index = index if index is not None else SidecarFileIndex(self.root / "meta")
        self.blobs = blobs if blobs is not None else LocalBlobs(self.root / "blobs")
        self.default_ttl_s = default_ttl_s
        self.max_bytes = max_bytes
        self.clock = clock

    def partial_path(self, file_id: str) -> Path:
        path = (self.root / "partial" / validate_file_id(file_id)).resolve()
        if path.parent != self.root / "partial":  # belt and braces: the id pattern already forbids this
            raise InvalidArgument.single("file_id", "does not name a file of this store", reason="INVALID_FILE_ID")
        return path

    def open_upload(
        self, name: str = "", declared_mime_type: str = "", ttl_s: float = 0.0, labels: Mapping[str, str] | None = None
    ) -> Upload:
        if ttl_s < 0:
            raise InvalidArgument.single("header.ttl_seconds", "must be 0 (the default) or more")
        if len(labels or {}) > MAX_LABELS:
            raise InvalidArgument.single("header.labels", f"at most {MAX_LABELS} labels")
        if len(name) > 255:
            raise InvalidArgument.single("header.name", "must be at most 255 characters")
        return Upload(self, name, declared_mime_type, ttl_s or self.default_ttl_s, labels or {})

    async def put_bytes(self, data: bytes, **header) -> FileInfo:
        upload = self.open_upload(**header)
        try:
            for offset in range(0, len(data), DOWNLOAD_CHUNK_BYTES):
                await upload.write(data[offset : offset + DOWNLOAD_CHUNK_BYTES])
            return await upload.commit()
        except BaseException:
            await upload.abort()
            raise

    def _expired(self, info: FileInfo) -> bool:
        return info.expire_time.ToNanoseconds() <= int(self.clock() * 1e9)

    async def stat(self, file_id: str) -> FileInfo:
        """The file's description, once its bytes are known to be there: a reader (the HTTP download
        asks this before its status line) learns of missing bytes before the first byte."""
        validate_file_id(file_id)
        info = await self.index.get(file_id)
        if info is None or self._expired(info):
            if info is not None:
                await self._remove(file_id)
            raise NotFound(f"file {file_id} does not exist or has expired", reason="FILE_NOT_FOUND")
        if not await self.blobs.exists(file_id):
            raise missing_bytes(file_id)
        return info

    async def read(
        self, file_id: str, offset: int = 0, length: int = 0, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> tuple[FileInfo, AsyncIterator[tuple[int, bytes]]]:
        """The file's description and an iterator over (offset, piece) of the range asked for."""
        info = await self.stat(file_id)
        if offset < 0 or offset > info.size_bytes:
            raise InvalidArgument.single("offset", f"must be between 0 and the file size ({info.size_bytes})")
        if length < 0:
            raise InvalidArgument.single("length", "must be 0 (to the end) or more")
        end = info.size_bytes if length == 0 else min(info.size_bytes, offset + length)

        async def pieces() -> AsyncIterator[tuple[int, bytes]]:
            position = offset
            async for piece in self.blobs.read(file_id, offset, end, chunk_bytes):
                yield position, piece
                position += len(piece)

        return info, pieces()

    async def read_all(self, file_id: str) -> bytes:
        _, pieces = await self.read(file_id)
        return b"".join([piece async for _, piece in pieces])

    async def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[FileInfo], str]:
        if not 0 <= page_size <= 1000:
            raise InvalidArgument.single("page_size", "must be between 1 and 1000, or 0 for 100")
        limit = page_size or 100
        offset = decode_page_token(page_token)
        infos = await self.index.page(offset, limit + 1)
        more = len(infos) > limit
        visible = [i for i in infos[:limit] if not self._expired(i)]
        return visible, encode_page_token(offset + limit) if more else ""

    async def delete(self, file_id: str) -> None:
        await self.stat(file_id)
        await self._remove(file_id)

    def _drop_abandoned_partials(self, older_than: float) -> None:
        for path in (self.root / "partial").iterdir():
            try:
                if path.stat().st_mtime < older_than:
                    path.unlink()
            except FileNotFoundError:
                pass

    async def _remove(self, file_id: str) -> None:
        await self.index.delete(file_id)
        await self.blobs.delete(file_id)

    async def sweep(self) -> int:
        """Deletes every expired file, and uploads abandoned midway by a process that died; returns
        how many files expired."""
        expired = await self.index.expired(int(self.clock() * 1000))
        for file_id in expired:
            await self._remove(file_id)
        await asyncio.to_thread(self._drop_abandoned_partials, time.time() - ABANDONED_UPLOAD_S)
        if expired:
            log.info("files.swept", count=len(expired))
        return len(expired)

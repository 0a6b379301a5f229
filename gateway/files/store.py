"""Stored files: descriptions in a FileIndex, bytes in Blobs (a folder or a bucket), with expiry and
a size limit.

Layout under the store folder: `partial/<id>` (uploads in progress, handed to the blobs when
complete), `blobs/<id>` (content, when the blobs are local), and `meta/<id>.json` when the index is
the sidecar one. Every path is built from a validated id, and checked to stay inside the folder.

Bytes move at disk speed when the event loop touches each byte as little as possible: an upload
keeps the chunks it is given (no copy) and hands them to a worker thread in batches of
`FLUSH_BYTES`, which hashes and writes them while the loop receives the next batch; a download
reads ahead in large pieces in a worker thread (`blobs.read_ahead`). One thread hop per few MiB,
not one per network chunk of 64 KiB, is what keeps the loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping
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
# Pieces of a gRPC download. Measured against 3 MiB, 1 MiB is faster: a message is handed over
# only once whole, and smaller ones keep reading, sending and the client's writing overlapped.
DOWNLOAD_CHUNK_BYTES = MiB
# An upload's bytes handed to the writer threads at once; measured faster than 1 MiB (more thread
# hops) and than 16 MiB (less overlap between receiving and writing).
FLUSH_BYTES = 4 * MiB
MAX_LABELS = 32
ABANDONED_UPLOAD_S = 24 * 3600.0  # an upload untouched this long belongs to a process that died


def default_files_dir(environ: Mapping[str, str] | None = None) -> Path:
    return capmesh_home(environ) / "files"


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class Upload:
    """One file being written: `write` chunks in order, then `commit` (or `abort`).

    At most two batches are held: the one being written and the one being gathered; a writer slower
    than the sender makes `write` wait, which slows the sender down (back-pressure)."""

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
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._in_hand: list[asyncio.Future[None]] = []  # the batch being hashed and written
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        """Takes `chunk` as it is (bytes never change, so it is kept, not copied)."""
        if self.size + len(chunk) > self._store.max_bytes:
            raise InvalidArgument.single(
                "chunk", f"the file exceeds the limit of {self._store.max_bytes} bytes", reason="FILE_TOO_LARGE"
            )
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self.size += len(chunk)
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= FLUSH_BYTES:
            await self._hand_over()

    async def _hand_over(self) -> None:
        """Starts hashing and writing the gathered batch, in two threads at once, once the previous
        batch is done (each stays in order)."""
        await self._written()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        loop = asyncio.get_running_loop()
        self._in_hand = [
            loop.run_in_executor(None, self._hash, batch),
            loop.run_in_executor(None, self._handle.writelines, batch),
        ]

    def _hash(self, batch: list[bytes]) -> None:
        for chunk in batch:  # releases the GIL for buffers this large: the event loop runs on
            self._digest.update(chunk)

    async def _written(self) -> None:
        """Waits until the batch in hand is hashed and written; raises what either raised."""
        if self._in_hand:
            # Shielded: a cancelled upload stops waiting, but the threads go on, and `abort` waits
            # for them again before it closes the file under them.
            outcomes = await asyncio.shield(asyncio.gather(*self._in_hand, return_exceptions=True))
            self._in_hand = []
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def commit(self) -> FileInfo:
        await self._hand_over()
        await self._written()
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
        # The threads must be done with the file before it is closed; how they ended no longer
        # matters.
        with contextlib.suppress(Exception):
            await self._written()
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
    ) -> tuple[FileInfo, AsyncGenerator[tuple[int, bytes], None]]:
        """The file's description and an iterator over (offset, piece) of the range asked for."""
        info = await self.stat(file_id)
        if offset < 0 or offset > info.size_bytes:
            raise InvalidArgument.single("offset", f"must be between 0 and the file size ({info.size_bytes})")
        if length < 0:
            raise InvalidArgument.single("length", "must be 0 (to the end) or more")
        end = info.size_bytes if length == 0 else min(info.size_bytes, offset + length)

        async def pieces() -> AsyncGenerator[tuple[int, bytes], None]:
            position = offset
            # Closed with this iterator, not later by the collector: the blobs' read-ahead thread
            # and open file end when the reader stops.
            async with contextlib.aclosing(self.blobs.read(file_id, offset, end, chunk_bytes)) as read:
                async for piece in read:
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

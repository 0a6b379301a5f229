"""Where a stored file's bytes live: a local folder (one machine) or an S3-compatible bucket (many).

The FileStore keeps descriptions (FileInfo) in its index and the bytes here, under the file's id.
Uploads are always spooled to a local `partial/` file first and handed over whole by `put`: a
half-written upload is never visible, and S3 gets one `upload_file` (multipart when large) instead
of a part per gRPC chunk, whose 4 MiB limit is below S3's 5 MiB minimum part size.

Several gateways share files by sharing the index (Redis) and the blobs (a bucket): a file
uploaded through one gateway is then readable through any. The bucket's endpoint and credentials
come from the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), read by boto3
itself, so MinIO, Ceph or AWS S3 all work without a setting of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from capmesh.gateway.server.files.ids import validate_file_id
from capmesh.services.runtime.errors import InvalidArgument, NotFound, Unavailable


def missing_bytes(file_id: str) -> NotFound:
    # The index knows the file but its bytes are gone (another host's disk, a bucket emptied by
    # hand): say so before any byte is sent, never answer with a truncated file.
    return NotFound(f"the bytes of file {file_id} are missing from the store", reason="FILE_BYTES_MISSING")


class Blobs(Protocol):
    async def put(self, file_id: str, source: Path) -> None:
        """Moves the complete upload at `source` (a local file) in as the file's bytes."""

    async def exists(self, file_id: str) -> bool: ...

    def read(self, file_id: str, start: int, end: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) in pieces of at most `chunk_bytes`; NotFound when the bytes are missing."""

    async def delete(self, file_id: str) -> None: ...


class LocalBlobs:
    """`<folder>/<id>`: the single-machine default."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        path = (self.folder / validate_file_id(file_id)).resolve()
        if path.parent != self.folder:  # belt and braces: the id pattern already forbids this
            raise InvalidArgument.single("file_id", "does not name a file of this store", reason="INVALID_FILE_ID")
        return path

    async def put(self, file_id: str, source: Path) -> None:
        await asyncio.to_thread(source.replace, self.path(file_id))

    async def exists(self, file_id: str) -> bool:
        return await asyncio.to_thread(self.path(file_id).is_file)

    async def read(self, file_id: str, start: int, end: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        try:
            handle = await asyncio.to_thread(open, self.path(file_id), "rb", buffering=0)
        except FileNotFoundError:
            raise missing_bytes(file_id) from None

        def pread(position: int, size: int) -> bytes:
            return os.pread(handle.fileno(), size, position)

        async with contextlib.aclosing(read_ahead(pread, start, end, chunk_bytes, handle.close)) as pieces:
            async for piece in pieces:
                yield piece

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, True)


class S3Blobs:
    """`s3://bucket/prefix`: objects `<prefix>/<id>` in a bucket every gateway reaches.

    boto3 is synchronous; each call runs in a worker thread (its clients are thread-safe)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> S3Blobs:
        import boto3  # only gateways configured for S3 load it

        # botocore tells at INFO where it found credentials and the endpoint, on every start: noise.
        logging.getLogger("botocore").setLevel(logging.WARNING)
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, boto3.client("s3"))

    def key(self, file_id: str) -> str:
        return self.prefix + validate_file_id(file_id)

    def check_bucket(self) -> None:
        """Called once at start: a gateway whose bucket is unreachable stops with the reason instead of
        failing every upload later."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(
                f"files_url: bucket {self.bucket!r} is not reachable: {exc}", reason="FILE_STORE_UNAVAILABLE"
            ) from None

    async def _call(self, method: str, file_id: str, *args: Any, **kwargs: Any) -> Any:
        """One boto3 call off the event loop; a missing object is NotFound, and a bucket that cannot
        answer is UNAVAILABLE (worth a retry), never INTERNAL."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self._client, method), *args, **kwargs)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise missing_bytes(file_id) from None
            raise Unavailable(f"the file store refused {method}: {exc}", reason="FILE_STORE_UNAVAILABLE") from None
        except BotoCoreError as exc:
            raise Unavailable(f"the file store is unreachable: {exc}", reason="FILE_STORE_UNAVAILABLE") from None

    async def put(self, file_id: str, source: Path) -> None:
        await self._call("upload_file", file_id, str(source), self.bucket, self.key(file_id))
        await asyncio.to_thread(source.unlink, True)

    async def exists(self, file_id: str) -> bool:
        try:
            await self._call("head_object", file_id, Bucket=self.bucket, Key=self.key(file_id))
        except NotFound:
            return False
        return True

    async def read(self, file_id: str, start: int, end: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        if start >= end:
            return
        key = self.key(file_id)
        reply = await self._call("get_object", file_id, Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        body = reply["Body"]

        def read(_position: int, size: int) -> bytes:
            return body.read(size)  # the body streams the range asked for: the position is implied

        async with contextlib.aclosing(read_ahead(read, start, end, chunk_bytes, body.close)) as pieces:
            async for piece in pieces:
                yield piece

    async def delete(self, file_id: str) -> None:
        await self._call("delete_object", file_id, Bucket=self.bucket, Key=self.key(file_id))


async def read_ahead(
    read: Callable[[int, int], bytes], start: int, end: int, chunk_bytes: int, close: Callable[[], None]
) -> AsyncGenerator[bytes, None]:
    """Bytes [start, end) as `read(position, size)` returns them, in pieces of at most `chunk_bytes`,
    each read in a worker thread while the caller sends the one before: the disk (or the bucket)
    and the network work at the same time. Ends early when `read` returns nothing (a file shorter
    than its description). `close` closes what `read` reads from (the file, the bucket's response
    body); it is called once the thread's last read is finished, however the caller stops."""
    loop = asyncio.get_running_loop()

    def next_read(position: int) -> asyncio.Future[bytes] | None:
        size = min(chunk_bytes, end - position)
        return loop.run_in_executor(None, read, position, size) if size > 0 else None

    pending: asyncio.Future[bytes] | None = None
    try:
        pending = next_read(start)
        position = start
        while pending is not None:
            piece = await asyncio.shield(pending)
            if not piece:
                break
            position += len(piece)
            pending = next_read(position)
            yield piece
    finally:
        try:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
        finally:
            close()  # even when this wait is itself cancelled: a handle is never left open


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{url!r} is not s3://bucket[/prefix]")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""

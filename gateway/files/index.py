"""Where file descriptions (FileInfo) live: in Redis beside the jobs, or in JSON sidecars on disk."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from capmesh.gateway.v1 import file_service_pb2
from capmesh.services.runtime.errors import InvalidArgument

FileInfo = file_service_pb2.FileInfo


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
        if kind != "offset" or offset < 0:
            raise ValueError(token)
        return offset
    except ValueError:
        raise InvalidArgument.single("page_token", "is not a token this server issued") from None


class FileIndex(Protocol):
    async def put(self, info: FileInfo) -> None: ...
    async def get(self, file_id: str) -> FileInfo | None: ...
    async def delete(self, file_id: str) -> None: ...
    async def page(self, offset: int, limit: int) -> list[FileInfo]:
        """Newest first."""

    async def expired(self, now_ms: int) -> list[str]: ...


def _expire_ms(info: FileInfo) -> int:
    return info.expire_time.ToMilliseconds()


class RedisFileIndex:
    """One key per file (expiring with the file) plus two sorted sets: by creation and by expiry."""

    def __init__(self, redis, prefix: str = "capmesh:") -> None:
        self._redis = redis
        self._key = f"{prefix}file:"
        self._by_time = f"{prefix}files:by_time"
        self._by_expiry = f"{prefix}files:by_expiry"

    async def put(self, info: FileInfo) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            # Relative to the file's own creation time, so the store's clock is the one that counts.
            lifetime_ms = max(1, _expire_ms(info) - info.create_time.ToMilliseconds())
            pipe.set(self._key + info.file_id, info.SerializeToString(), px=lifetime_ms)
            pipe.zadd(self._by_time, {info.file_id: info.create_time.ToMilliseconds()})
            pipe.zadd(self._by_expiry, {info.file_id: _expire_ms(info)})
            await pipe.execute()

    async def get(self, file_id: str) -> FileInfo | None:
        raw = await self._redis.get(self._key + file_id)
        return FileInfo.FromString(raw) if raw else None

    async def delete(self, file_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key + file_id)
            pipe.zrem(self._by_time, file_id)
            pipe.zrem(self._by_expiry, file_id)
            await pipe.execute()

    async def page(self, offset: int, limit: int) -> list[FileInfo]:
        infos: list[FileInfo] = []
        position = offset
        while len(infos) < limit:
            ids = await self._redis.zrevrange(self._by_time, position, position + limit - 1)
            if not ids:
                break
            position += len(ids)
            raws = await self._redis.mget([self._key + i.decode() for i in ids])
            infos.extend(FileInfo.FromString(raw) for raw in raws if raw)
            if len(ids) < limit:
                break
        return infos[:limit]

    async def expired(self, now_ms: int) -> list[str]:
        return [i.decode() for i in await self._redis.zrangebyscore(self._by_expiry, "-inf", now_ms)]


class SidecarFileIndex:
    """`<id>.json` beside each blob: no Redis needed, and the store folder stays self-describing."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, file_id: str) -> Path:
        return self._folder / f"{file_id}.json"

    def _read(self, path: Path) -> FileInfo | None:
        try:
            return json_format.Parse(path.read_text(), FileInfo())
        except (OSError, json_format.ParseError, json.JSONDecodeError):
            return None

    def _write(self, info: FileInfo) -> None:
        path = self._path(info.file_id)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json_format.MessageToJson(info))
        partial.replace(path)  # atomic: readers never see half a sidecar

    async def put(self, info: FileInfo) -> None:
        await asyncio.to_thread(self._write, info)

    async def get(self, file_id: str) -> FileInfo | None:
        return await asyncio.to_thread(self._read, self._path(file_id))

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self._path(file_id).unlink, True)

    def _all(self) -> list[FileInfo]:
        infos = (self._read(p) for p in self._folder.glob("*.json"))
        return [i for i in infos if i is not None]

    async def page(self, offset: int, limit: int) -> list[FileInfo]:
        infos = await asyncio.to_thread(self._all)
        infos.sort(key=lambda i: (i.create_time.ToNanoseconds(), i.file_id), reverse=True)
        return infos[offset : offset + limit]

    async def expired(self, now_ms: int) -> list[str]:
        return [i.file_id for i in await asyncio.to_thread(self._all) if _expire_ms(i) <= now_ms]

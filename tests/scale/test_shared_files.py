"""Shared files across gateways: bytes in a real S3-compatible server (moto), descriptions in a real
Redis; a file uploaded through one gateway downloads through another, and a file whose bytes are
missing is NOT_FOUND / 404 before any byte."""

from __future__ import annotations

import hashlib

import grpc
import httpx
import pytest
import redis.asyncio

from capmesh.client import aio_channel
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.blobs import S3Blobs
from capmesh.gateway.server.files.index import RedisFileIndex
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc
from capmesh.services.runtime.errors import NotFound
from capmesh.services.runtime.settings import SettingsError
from tests.jobs.support import Process, gateway_env

MiB = 1024 * 1024


def s3_store(root, bucket: str, index=None) -> FileStore:
    return FileStore(root, index, S3Blobs.from_url(f"s3://{bucket}/shared/files"))


async def test_the_s3_store_keeps_bytes_in_the_bucket_and_reads_ranges(tmp_path, bucket, s3_server):
    store = s3_store(tmp_path / "a", bucket)
    data = bytes(range(256)) * (5 * 4096 + 3)  # over 5 MiB: a multipart upload
    info = await store.put_bytes(data, name="big.bin")

    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size_bytes == len(data)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"shared/files/{info.file_id}"]
    assert list((tmp_path / "a" / "partial").iterdir()) == []  # the spooled upload is handed over
    assert await store.read_all(info.file_id) == data
    _, pieces = await store.read(info.file_id, offset=MiB - 10, length=20, chunk_bytes=7)
    got = [(offset, piece) async for offset, piece in pieces]
    assert [o for o, _ in got] == [MiB - 10, MiB - 3, MiB + 4]
    assert b"".join(p for _, p in got) == data[MiB - 10 : MiB + 10]

    await store.delete(info.file_id)
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


async def test_bytes_missing_from_the_store_are_not_found_before_any_byte(tmp_path, bucket, s3_server, redis_server):
    redis_server.flush()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        index = RedisFileIndex(client)
        # Two gateways' stores on one Redis: one with local folders of its own (the defect), one on S3.
        local_a, local_b = FileStore(tmp_path / "a", index), FileStore(tmp_path / "b", index)
        info = await local_a.put_bytes(b"only on host a")
        with pytest.raises(NotFound) as missing:
            await local_b.stat(info.file_id)
        assert missing.value.reason == "FILE_BYTES_MISSING"

        shared = s3_store(tmp_path / "c", bucket, index)
        info = await shared.put_bytes(b"in the bucket")
        s3_server.client().delete_object(Bucket=bucket, Key=f"shared/files/{info.file_id}")
        with pytest.raises(NotFound):
            await shared.read(info.file_id)
    finally:
        await client.aclose()


def test_files_url_must_be_an_s3_url():
    with pytest.raises(SettingsError, match="files_url"):
        GatewaySettings(files_url="/some/folder")
    assert GatewaySettings(files_url="s3://bucket").files_url == "s3://bucket"


def test_a_gateway_whose_bucket_is_missing_stops_saying_so(tmp_path, s3_server):
    env = {**s3_server.env, **gateway_env(port=0, http_port=0, files_url="s3://no-such-bucket", log_level="error")}
    with pytest.raises(RuntimeError, match="did not start"):
        Process(["-m", "tests.jobs.gateway_process"], env=env)


@pytest.fixture
def two_gateways(tmp_path, bucket, s3_server, redis_server):
    """Two gateway processes as on two hosts: each its own files folder, one Redis, one bucket."""
    redis_server.flush()
    started: list[tuple[Process, str, str]] = []
    for name in ("a", "b"):
        settings = dict(
            port=0,
            http_port=0,
            redis_url=redis_server.url,
            files_dir=tmp_path / name,
            files_url=f"s3://{bucket}/mesh",
            log_level="error",
        )
        process = Process(["-m", "tests.jobs.gateway_process"], env={**s3_server.env, **gateway_env(**settings)})
        words = process.line.split()
        started.append((process, words[words.index("grpc") + 1], words[words.index("http") + 1]))
    yield started
    for process, _, _ in started:
        process.kill()


@pytest.mark.e2e
async def test_a_file_uploaded_through_one_gateway_downloads_through_another(two_gateways, bucket, s3_server):
    (_, _, http_a), (_, grpc_b, http_b) = two_gateways
    data = b"RIFF" + bytes(range(256)) * 9000  # ~2.3 MiB: several chunks
    async with httpx.AsyncClient(timeout=60) as http:
        uploaded = await http.post(f"{http_a}/v1/files?name=clip.bin", content=data)
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["file"]["fileId"]

        downloaded = await http.get(f"{http_b}/v1/files/{file_id}:download")
        assert downloaded.status_code == 200 and downloaded.content == data
        ranged = await http.get(f"{http_b}/v1/files/{file_id}:download", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == data[100:200]

        channel = aio_channel(grpc_b)
        try:
            stub = file_service_pb2_grpc.FileServiceStub(channel)
            pieces = [m async for m in stub.DownloadFile(file_service_pb2.DownloadFileRequest(file_id=file_id))]
            assert b"".join(m.data for m in pieces) == data
            assert pieces[0].file.sha256 == hashlib.sha256(data).hexdigest()

            # The description stays in Redis, the bytes go: a clear 404 / NOT_FOUND, never a short 200.
            s3_server.client().delete_object(Bucket=bucket, Key=f"mesh/{file_id}")
            gone = await http.get(f"{http_b}/v1/files/{file_id}:download")
            assert gone.status_code == 404 and "FILE_BYTES_MISSING" in gone.text
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                async for _ in stub.DownloadFile(file_service_pb2.DownloadFileRequest(file_id=file_id)):
                    pass
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await channel.close()

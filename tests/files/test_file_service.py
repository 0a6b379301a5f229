"""The FileService through a real in-process grpc.aio server, with the sidecar and the Redis index."""

from __future__ import annotations

import asyncio
import hashlib
import os

import grpc
import pytest
import redis.asyncio

from capmesh.client import aio_channel, from_rpc_error
from capmesh.gateway.server.files.detect import detect_mime_type
from capmesh.gateway.server.files.index import RedisFileIndex
from capmesh.gateway.server.files.service import FileServicer
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.v1 import file_service_pb2 as fpb
from capmesh.gateway.v1 import file_service_pb2_grpc
from capmesh.services.runtime.interceptor import RequestContextInterceptor
from capmesh.services.runtime.server import server_options
from capmesh.services.runtime.settings import ServerSettings

MiB = 1024 * 1024


class Clock:
    """Time the test moves by hand, so expiry needs no waiting."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sidecar", "redis"])
async def files(request, tmp_path, redis_server):
    client = None
    index = None
    if request.param == "redis":
        redis_server.flush()
        client = redis.asyncio.Redis.from_url(redis_server.url)
        index = RedisFileIndex(client)
    clock = Clock()
    store = FileStore(tmp_path / "files", index, default_ttl_s=3600, max_bytes=8 * MiB, clock=clock)
    server = grpc.aio.server(interceptors=[RequestContextInterceptor()], options=server_options(ServerSettings()))
    file_service_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(store), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio_channel(f"127.0.0.1:{port}")
    stub = file_service_pb2_grpc.FileServiceStub(channel)
    stub.address = f"127.0.0.1:{port}"
    yield stub, store, clock
    await channel.close()
    await server.stop(0)
    if client is not None:
        await client.aclose()


def upload_messages(data: bytes, chunk: int = MiB, **header):
    yield fpb.UploadFileRequest(header=fpb.UploadHeader(**header))
    for offset in range(0, len(data), chunk):
        yield fpb.UploadFileRequest(chunk=data[offset : offset + chunk])


async def download(stub, file_id: str, offset: int = 0, length: int = 0) -> tuple[fpb.FileInfo, bytes]:
    info, parts, position = None, [], offset
    async for message in stub.DownloadFile(fpb.DownloadFileRequest(file_id=file_id, offset=offset, length=length)):
        if message.HasField("file"):
            info = message.file
        assert message.offset == position
        position += len(message.data)
        parts.append(message.data)
    return info, b"".join(parts)


async def test_upload_in_1mib_chunks_downloads_byte_identical_by_range(files):
    stub, store, _ = files
    data = os.urandom(3 * MiB + 12345)
    response = await stub.UploadFile(upload_messages(data, name="blob.bin", labels={"k": "v"}))
    info = response.file
    assert (info.size_bytes, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert info.mime_type == "application/octet-stream" and info.labels["k"] == "v"
    whole_info, whole = await download(stub, info.file_id)
    assert whole == data and whole_info.file_id == info.file_id
    for offset, length in [
        (0, 10),
        (MiB - 5, 10),
        (MiB + 1, 2 * MiB),
        (len(data) - 7, 0),
        (len(data) - 7, 100),
        (len(data), 0),
    ]:
        _, part = await download(stub, info.file_id, offset, length)
        assert part == data[offset : offset + length if length else None]
    assert (store.root / "blobs" / info.file_id).read_bytes() == data


async def test_mime_type_is_detected_from_magic_bytes_before_the_declared_type(files):
    stub, _, _ = files
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(100)
    info = (await stub.UploadFile(upload_messages(png, mime_type="text/plain"))).file
    assert info.mime_type == "image/png"
    info = (await stub.UploadFile(upload_messages(b'{"a": [1, 2]}'))).file
    assert info.mime_type == "application/json"
    info = (await stub.UploadFile(upload_messages(os.urandom(64), mime_type="audio/x-custom"))).file
    assert info.mime_type == "audio/x-custom"


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"ID3\x04\x00rest", "audio/mpeg"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"fLaC\x00\x00", "audio/flac"),
        (b"\x00\x00\x00\x20ftypisom", "video/mp4"),
        ("héllo wörld".encode(), "text/plain; charset=utf-8"),
    ],
)
def test_detection_table(head, kind):
    assert detect_mime_type(head, complete=True) == kind


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "..", "", "a" * 31, "a/" + "b" * 30, "a" * 31 + "\x00"])
async def test_ids_that_are_not_ours_are_invalid_argument(files, bad_id):
    stub, _, _ = files
    for call in (
        lambda: download(stub, bad_id),
        lambda: stub.GetFile(fpb.GetFileRequest(file_id=bad_id)),
        lambda: stub.DeleteFile(fpb.DeleteFileRequest(file_id=bad_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(caught.value).field_violations[0][0] == "file_id"


async def test_unknown_id_is_not_found(files):
    stub, _, _ = files
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetFile(fpb.GetFileRequest(file_id="A" * 32))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_expired_file_is_gone_and_the_sweeper_removes_its_bytes(files):
    stub, store, clock = files
    info = (await stub.UploadFile(upload_messages(b"short-lived", ttl_seconds=60))).file
    keep = (await stub.UploadFile(upload_messages(b"long-lived"))).file
    assert info.expire_time.ToSeconds() - info.create_time.ToSeconds() == 60
    clock.now += 61
    for call in (lambda: stub.GetFile(fpb.GetFileRequest(file_id=info.file_id)), lambda: download(stub, info.file_id)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await store.sweep()
    assert not (store.root / "blobs" / info.file_id).exists()
    assert (await stub.GetFile(fpb.GetFileRequest(file_id=keep.file_id))).file.sha256 == keep.sha256


async def test_size_limit_chunk_limit_and_header_rules(files):
    stub, store, _ = files
    for messages, field in [
        (upload_messages(b"x" * (9 * MiB), chunk=3 * MiB), "chunk"),
        (upload_messages(b"x" * (4 * MiB), chunk=4 * MiB), "chunk"),
        (iter([fpb.UploadFileRequest(chunk=b"no header")]), "header"),
        (iter([]), "header"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UploadFile(messages)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(caught.value).field_violations[0][0] == field
    assert list((store.root / "partial").iterdir()) == []  # refused uploads leave nothing behind
    assert list((store.root / "blobs").iterdir()) == []


async def test_an_upload_in_many_batches_is_written_in_order_and_hashed_whole(files, monkeypatch):
    stub, store, _ = files
    monkeypatch.setattr("capmesh.gateway.server.files.store.FLUSH_BYTES", 64 * 1024)  # many batches
    data = os.urandom(MiB + 4321)
    info = (await stub.UploadFile(upload_messages(data, chunk=10_007))).file
    assert (info.size_bytes, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (store.root / "blobs" / info.file_id).read_bytes() == data


async def test_an_upload_refused_while_batches_are_written_leaves_nothing_behind(files, monkeypatch):
    stub, store, _ = files
    monkeypatch.setattr("capmesh.gateway.server.files.store.FLUSH_BYTES", 64 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UploadFile(upload_messages(b"x" * (9 * MiB), chunk=MiB // 2))
    assert from_rpc_error(caught.value).reason == "FILE_TOO_LARGE"
    assert list((store.root / "partial").iterdir()) == []


async def test_reads_in_small_pieces_and_a_reader_that_stops_early_closes_the_file(files):
    _, store, _ = files
    data = os.urandom(50_000)
    info = await store.put_bytes(data)
    _, pieces = await store.read(info.file_id, offset=10, length=20, chunk_bytes=7)
    got = [(offset, piece) async for offset, piece in pieces]
    assert [o for o, _ in got] == [10, 17, 24] and b"".join(p for _, p in got) == data[10:30]

    blob = store.root / "blobs" / info.file_id

    def open_on_blob() -> bool:
        return any(os.path.realpath(f"/proc/self/fd/{fd}") == str(blob) for fd in os.listdir("/proc/self/fd"))

    _, pieces = await store.read(info.file_id, chunk_bytes=1000)
    assert (await anext(pieces))[1] == data[:1000] and open_on_blob()
    await pieces.aclose()  # the reader is gone (a closed connection): the read-ahead ends with it
    assert not open_on_blob()


async def test_the_client_uploads_and_downloads_files_on_disk(files, tmp_path):
    from capmesh.client import sync_channel
    from capmesh.client.files import CHUNK_BYTES, download_file, upload_file

    stub, _, _ = files
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(2 * CHUNK_BYTES + 99))  # three chunks, the last a short one
    sent: list[int] = []
    with sync_channel(stub.address) as channel:
        info = await asyncio.to_thread(upload_file, channel, source, labels={"k": "v"}, on_progress=sent.append)
        assert (info.name, info.size_bytes, info.labels["k"]) == ("source.bin", source.stat().st_size, "v")
        assert sent == [CHUNK_BYTES, CHUNK_BYTES, 99]
        whole = await asyncio.to_thread(download_file, channel, info.file_id, tmp_path / "whole.bin")
        assert whole[1:] == (tmp_path / "whole.bin", info.size_bytes)
        assert whole[1].read_bytes() == source.read_bytes()
        ranged = await asyncio.to_thread(
            download_file, channel, info.file_id, lambda i: tmp_path / f"part-{i.name}", offset=5, length=10
        )
        assert ranged[1].name == "part-source.bin" and ranged[1].read_bytes() == source.read_bytes()[5:15]


async def test_list_pages_newest_first_and_delete(files):
    stub, _, clock = files
    ids = []
    for n in range(5):
        clock.now += 1
        ids.append((await stub.UploadFile(upload_messages(f"file {n}".encode(), name=f"f{n}"))).file.file_id)
    seen, token = [], ""
    while True:
        page = await stub.ListFiles(fpb.ListFilesRequest(page_size=2, page_token=token))
        seen += [f.file_id for f in page.files]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    await stub.DeleteFile(fpb.DeleteFileRequest(file_id=ids[0]))
    page = await stub.ListFiles(fpb.ListFilesRequest())
    assert [f.file_id for f in page.files] == ids[:0:-1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFiles(fpb.ListFilesRequest(page_token="garbage"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_services_read_uploaded_files_by_id_through_the_runtime_resolver(files):
    from capmesh.common.v1 import artifact_pb2
    from capmesh.services.runtime.gateway_files import GatewayFiles
    from capmesh.services.runtime.protoconv import ArtifactResolver
    from capmesh.services.runtime.settings import ServerSettings

    stub, _, _ = files
    portrait = b"\x89PNG\r\n\x1a\n" + os.urandom(2 * MiB)
    info = (await stub.UploadFile(upload_messages(portrait, name="portrait.png"))).file
    reader = GatewayFiles(ServerSettings(gateway=stub.address))
    try:
        resolver = ArtifactResolver(reader.fetch)
        for _ in range(2):  # one upload, many requests
            assert await resolver.read(artifact_pb2.Artifact(file_id=info.file_id), "reference_image") == portrait
    finally:
        await reader.close()


def test_file_ids_never_start_with_a_dash_that_a_command_line_would_read_as_an_option():
    from capmesh.gateway.server.files.ids import new_file_id, validate_file_id

    ids = [new_file_id() for _ in range(5000)]  # about 78 of 5000 token_urlsafe ids start with '-'
    assert not [i for i in ids if i.startswith("-")]
    assert all(validate_file_id(i) == i for i in ids)

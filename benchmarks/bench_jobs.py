"""Jobs and files through a gateway process, in one run.

- jobs/s through submit -> dispatch -> complete with a trivial backend (a stepper backend process
  answering "steps:1" with no delay), with the in-memory job store and with the Redis store: a batch
  of jobs is submitted at once and timed until the last one is done;
- file upload and download MB/s through the gateway's FileService (1 MiB chunks), against a plain
  local file copy (shutil.copyfile) of the same size on the same disk.

    python -m benchmarks.run jobs [--quick]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from benchmarks.harness import Row, Stats
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc

NAME = "jobs"
MiB = 1024 * 1024


async def _jobs_per_second(client, batch: int) -> float:
    started = time.perf_counter()
    job_ids = await asyncio.gather(*(client.submit("steps:1") for _ in range(batch)))
    for job_id in job_ids:
        operation = await client.operations.WaitOperation(
            operations_pb2.WaitOperationRequest(name=f"operations/{job_id}", timeout=duration_pb2.Duration(seconds=60))
        )
        if not operation.HasField("response"):
            raise RuntimeError(f"job {job_id} did not succeed: {operation.error}")
    return batch / (time.perf_counter() - started)


async def _upload(stub, data: bytes) -> str:
    def messages():
        yield file_service_pb2.UploadFileRequest(header=file_service_pb2.UploadHeader(name="bench.bin"))
        for offset in range(0, len(data), MiB):
            yield file_service_pb2.UploadFileRequest(chunk=data[offset : offset + MiB])

    return (await stub.UploadFile(messages())).file.file_id


async def _download(stub, file_id: str) -> int:
    size = 0
    async for message in stub.DownloadFile(file_service_pb2.DownloadFileRequest(file_id=file_id)):
        size += len(message.data)
    return size


async def _measure(quick: bool, folder: Path) -> list[Row]:
    from tests.jobs.support import Client, eventually, start_gateway_process, start_stepper_process, write_backends
    from tests.support.redis_server import RedisServer

    repeats, batch, file_mib = (3, 50, 16) if quick else (7, 200, 64)
    rows: list[Row] = []
    processes = []
    with RedisServer() as redis_server:
        try:
            stepper, backend = start_stepper_process(step_s=0.0, max_concurrency=8)
            processes.append(stepper)
            backends = write_backends(folder / "backends.json", [backend], max_concurrency=8)
            samples: dict[str, list[float]] = {}
            clients = {}
            for case, extra in (("memory store", {}), ("redis store", {"redis_url": redis_server.url})):
                gateway, address = start_gateway_process(
                    port=0,
                    http_port=0,
                    backends_file=backends,
                    files_dir=folder / "files",
                    log_level="error",
                    job_queue_limit=10_000,
                    **extra,
                )
                processes.append(gateway)
                client = clients[case] = Client.connect(address)
                await eventually(lambda c=client: c.available_backends(), what="the backend")
                await _jobs_per_second(client, 10)  # warm-up: channels, script loading
                samples[case] = []
            for _ in range(repeats):  # alternate the stores so both see the same machine load
                for case, client in clients.items():
                    samples[case].append(await _jobs_per_second(client, batch))
            for case in clients:
                rows.append(
                    Row.from_stats(
                        NAME,
                        f"{case}, {batch} jobs",
                        "jobs/s",
                        Stats(tuple(samples[case])),
                        baseline=f"memory store, {batch} jobs",
                        higher_is_better=True,
                    )
                )

            stub = file_service_pb2_grpc.FileServiceStub(clients["memory store"].channel)
            data = os.urandom(file_mib * MiB)
            source = folder / "source.bin"
            source.write_bytes(data)
            copy, upload, download = [], [], []
            for _ in range(repeats):
                started = time.perf_counter()
                shutil.copyfile(source, folder / "copy.bin")
                copy.append(file_mib / (time.perf_counter() - started))
                started = time.perf_counter()
                file_id = await _upload(stub, data)
                upload.append(file_mib / (time.perf_counter() - started))
                started = time.perf_counter()
                if await _download(stub, file_id) != len(data):
                    raise RuntimeError("download size differs")
                download.append(file_mib / (time.perf_counter() - started))
            base = f"local file copy, {file_mib} MiB"
            for case, values in (
                (base, copy),
                (f"upload, {file_mib} MiB", upload),
                (f"download, {file_mib} MiB", download),
            ):
                rows.append(
                    Row.from_stats(NAME, case, "MB/s", Stats(tuple(values)), baseline=base, higher_is_better=True)
                )
            for client in clients.values():
                await client.close()
        finally:
            for process in processes:
                process.kill()
    return rows


def run(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="capmesh-bench-jobs-") as folder:
        return asyncio.run(_measure(quick, Path(folder)))

"""Files at disk speed: one file uploaded to and downloaded from a gateway, over gRPC and over HTTP,
against a local copy of the same file on the same disk (goal: every case >= 0.25 of the copy).

Three kinds of process: the gateway (`capmesh gateway`, its file store in a temporary folder), the
local copy (`shutil.copyfile`, in a worker process of its own so that it shares nothing with the
clients), and this one, the clients: gRPC through `capmesh.client.files` (what `capmesh files`
runs), HTTP through curl (a C client, so that the figure is the gateway's, not a Python HTTP
client's). Every case reads its source from and writes its result to a file on the same disk as
the copy does, and the rounds alternate the cases so that all of them see the same machine load;
each case's ratio to the copy is taken within a round, then the median and spread of the rounds.

    python -m benchmarks.run files [--quick]     # 100 MB, 5 rounds (quick: 20 MB, 2 rounds)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker, serve_requests, spawn
from capmesh.client import sync_channel
from capmesh.client.files import download_file, upload_file
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc

NAME = "files"
MB = 1_000_000
COPY = "local copy"


async def _copy(request: dict[str, Any]) -> dict[str, Any]:
    """The worker's one job: copy `source` to `target` and say how long it took."""
    started = time.perf_counter()
    shutil.copyfile(request["source"], request["target"])
    return {"seconds": time.perf_counter() - started}


def _curl(*args: str) -> str:
    """One curl call; its own timing (`time_total`) leaves out the start of the curl process."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


class Clients:
    """The four measured cases against one gateway; each returns seconds and leaves its result on disk."""

    def __init__(self, grpc_address: str, http_url: str, folder: Path, source: Path) -> None:
        self._channel = sync_channel(grpc_address)
        self._stub = file_service_pb2_grpc.FileServiceStub(self._channel)
        self._http = http_url
        self._folder = folder
        self._source = source
        self._uploaded: dict[str, str] = {}  # case -> file id

    def close(self) -> None:
        for file_id in self._uploaded.values():
            self._stub.DeleteFile(file_service_pb2.DeleteFileRequest(file_id=file_id))
        self._channel.close()

    def _forget(self, key: str) -> None:
        file_id = self._uploaded.pop(key, None)
        if file_id is not None:
            self._stub.DeleteFile(file_service_pb2.DeleteFileRequest(file_id=file_id))

    def grpc_upload(self) -> float:
        self._forget("grpc")
        started = time.perf_counter()
        info = upload_file(self._channel, self._source)
        seconds = time.perf_counter() - started
        self._uploaded["grpc"] = info.file_id
        return seconds

    def grpc_download(self) -> float:
        target = self._folder / "grpc-download.bin"
        target.unlink(missing_ok=True)
        started = time.perf_counter()
        download_file(self._channel, self._uploaded["grpc"], target)
        return time.perf_counter() - started

    def http_upload(self) -> float:
        self._forget("http")
        url = f"{self._http}/v1/files?name=source.bin"
        headers = ["-H", "Content-Type: application/octet-stream", "-H", "Expect:"]  # no 100-continue wait
        out = _curl("-X", "POST", "-T", str(self._source), *headers, "-w", "\n%{time_total}", url)
        reply, seconds = out.rsplit("\n", 1)
        self._uploaded["http"] = json.loads(reply)["file"]["fileId"]
        return float(seconds)

    def http_download(self) -> float:
        target = self._folder / "http-download.bin"
        target.unlink(missing_ok=True)
        url = f"{self._http}/v1/files/{self._uploaded['http']}:download"
        return float(_curl("-o", str(target), "-w", "%{time_total}", url))


async def _measure(quick: bool) -> list[Row]:
    if shutil.which("curl") is None:
        raise RuntimeError("bench_files needs curl on PATH for the HTTP cases")
    size_mb, rounds = (20, 2) if quick else (100, 5)
    # The gateway's store, the source, the copy and every download on one disk: a temporary folder.
    folder = Path(tempfile.mkdtemp(prefix="capmesh-bench-files-"))
    source = folder / "source.bin"
    with source.open("wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(MB))  # random: nothing on the way may compress it
    gateway: asyncio.subprocess.Process | None = None
    copier: Worker | None = None
    clients: Clients | None = None
    try:
        settings = ["--set", "log_level=warning", "--set", f"files_dir={folder / 'store'}"]
        gateway, banner = await spawn(
            ["-m", "capmesh.cli.main", "gateway", "--port", "0", "--http-port", "0", *settings], " listening on "
        )
        grpc_address, http_url = banner.split(" grpc ", 1)[1].split(" http ")
        copier = await Worker.start("benchmarks.bench_files", "copy-worker")
        clients = Clients(grpc_address, http_url.strip(), folder, source)
        cases: dict[str, Callable[[], float]] = {
            "grpc upload": clients.grpc_upload,
            "grpc download": clients.grpc_download,
            "http upload": clients.http_upload,
            "http download": clients.http_download,
        }

        async def copy() -> float:
            target = folder / "copy.bin"
            target.unlink(missing_ok=True)
            reply = await copier.ask({"source": str(source), "target": str(target)})
            return float(reply["seconds"])

        seconds: dict[str, list[float]] = {COPY: [], **{case: [] for case in cases}}
        order = [(COPY, copy), *((case, _in_thread(measure)) for case, measure in cases.items())]
        for round_ in range(rounds + 1):  # round 0 warms every path up (and uploads first) and is not counted
            # Each round starts one case later, so that no case always follows the same one; a
            # download that comes before its upload reads the previous round's file.
            for case, measure in order[round_ % len(order) :] + order[: round_ % len(order)]:
                taken = await measure()
                if round_:
                    seconds[case].append(taken)
    finally:
        if clients is not None:
            clients.close()
        if copier is not None:
            await copier.stop()
        if gateway is not None:
            gateway.terminate()
            await gateway.wait()
        shutil.rmtree(folder, ignore_errors=True)

    rates = {case: [size_mb / s for s in taken] for case, taken in seconds.items()}
    copy_case = f"{COPY}, {size_mb} MB"
    rows = [Row.from_samples(NAME, copy_case, "MB/s", rates[COPY], higher_is_better=True)]
    for case in cases:
        rows.append(
            Row.from_samples(
                NAME, f"{case}, {size_mb} MB", "MB/s", rates[case], higher_is_better=True, baseline=copy_case
            )
        )
        rows.append(ratio_row(NAME, f"{case} / {COPY} (goal >= 0.25)", rates[case], rates[COPY]))
    return rows


def _in_thread(measure: Callable[[], float]) -> Callable[[], Any]:
    return lambda: asyncio.to_thread(measure)


def run(quick: bool) -> list[Row]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__" and sys.argv[1:] == ["copy-worker"]:
    asyncio.run(serve_requests(_copy))

"""`capmesh gateway --workers 2`: two gateway processes on one gRPC port, sharing a real Redis.

The gateway runs as a user starts it (a real process tree); the echo backend runs in this test's
event loop and registers itself with whichever worker its channel reaches. Which worker served a
call is read from the kernel, not from the gateway: the backend records each call's peer (the
calling worker's end of its connection), and /proc says which worker process owns that socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2
from prometheus_client.parser import text_string_to_metric_families

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.xds.resources import ENDPOINTS
from capmesh.gateway.v1 import file_service_pb2 as files_pb2
from capmesh.gateway.v1 import file_service_pb2_grpc, job_service_pb2_grpc, registry_service_pb2_grpc
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb2
from capmesh.llm.v1 import llm_service_pb2
from capmesh.services.runtime import restarts
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings, SettingsError
from tests.gateway.backends import CHAT, build_echo_service, chat_request
from tests.jobs.support import READY_TIMEOUT_S, Process, eventually

WORKERS = 2
SETTINGS = {
    "heartbeat_interval_s": 0.2,
    "lease_s": 2.0,
    "job_lease_s": 1.5,
    "grace_period_s": 1,
    "log_level": "warning",
}


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


def socket_owner(port: int, pids: set[int]) -> int | None:
    """The process among `pids` whose TCP socket has local port `port` (from /proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's children but multiprocessing's resource tracker (which outlives it briefly)."""
    workers = set()
    for pid in children(supervisor):
        try:
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except OSError:  # it exited meanwhile
            continue
    return workers


def fresh_channel(address: str) -> grpc.aio.Channel:
    # Channels of one process share connections unless each has its own subchannel pool: one
    # connection each is what a new client brings, and what the kernel spreads across workers.
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


class Gateway:
    """The gateway process tree, and the echo backend's record of who called it."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.address, self.http_url = process.line.split("grpc ", 1)[1].split(" http ")
        self.calls: list[tuple[str, str]] = []  # (prompt, peer) per Chat the backend served
        self.backend_port = 0

    @property
    def workers(self) -> set[int]:
        return worker_pids(self.process.popen.pid)

    async def chat(self, channel: grpc.aio.Channel, prompt: str) -> int:
        """Calls Chat through `channel` -> the pid of the worker that served it."""
        await channel.unary_unary(CHAT)(chat_request(prompt).SerializeToString())
        peer = next(peer for p, peer in reversed(self.calls) if p == prompt)
        owner = socket_owner(int(peer.rsplit(":", 1)[1]), self.workers)
        assert owner is not None, peer
        return owner


@pytest.fixture
async def gateway(tmp_path, redis_server):
    redis_server.flush()
    env = {f"CAPMESH_GATEWAY_{k.upper()}": str(v) for k, v in SETTINGS.items()}
    args = ["--port", "0", "--http-port", "0", "--workers", str(WORKERS), "--redis", redis_server.url]
    process = Process(
        ["-m", "capmesh.cli.main", "gateway", *args, "--set", f"files_dir={tmp_path / 'files'}"],
        env=env,
        marker="capmesh gateway listening on",
    )
    running = Gateway(process)
    service, servicer = build_echo_service("echo", ServerSettings(gateway=running.address, grace_period_s=0))
    chat = servicer.Chat

    async def recording_chat(request, context):
        running.calls.append((request.messages[-1].content, context.peer()))
        return await chat(request, context)

    servicer.Chat = recording_chat  # type: ignore[method-assign]
    backend = await create_server(service)
    running.backend_port = backend.port
    try:
        yield running
    finally:
        await backend.shutdown(grace_s=0)
        process.kill()


async def _until_served(gateway: Gateway, channel: grpc.aio.Channel, prompt: str) -> int:
    """The worker pid, once that worker routes to the backend (each worker health-checks it first)."""

    async def attempt() -> int | None:
        try:
            return await gateway.chat(channel, prompt)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return None

    return await eventually(attempt, what=f"{prompt} served")


async def _on_two_workers(gateway: Gateway, channels: list[grpc.aio.Channel]) -> dict[int, grpc.aio.Channel]:
    """Fresh channels until two reach different workers -> worker pid: channel."""
    by_worker: dict[int, grpc.aio.Channel] = {}
    while len(by_worker) < WORKERS:
        channel = fresh_channel(gateway.address)
        channels.append(channel)
        by_worker.setdefault(await _until_served(gateway, channel, f"which-{len(channels)}"), channel)
        assert len(channels) < 40, "every connection reached the same worker"
    return by_worker


async def _backends_seen(channel: grpc.aio.Channel, capability: str, count: int) -> None:
    stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
    async for view in stub.WatchCapabilities(registry_pb2.WatchCapabilitiesRequest()):
        if sum(len(c.backends) for c in view.capabilities if c.capability == capability) >= count:
            return


async def _endpoints(channel: grpc.aio.Channel, cluster: str) -> tuple[str, set[int]]:
    """One ADS answer for `cluster`'s endpoints -> (its version, the HEALTHY endpoints' ports)."""
    request = DiscoveryRequest(type_url=ENDPOINTS, resource_names=[cluster])
    request.node.id = "capmesh-test"
    stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter([request]))
    try:
        response = await asyncio.wait_for(stream.read(), READY_TIMEOUT_S)
    finally:
        stream.cancel()
    ports = set()
    for packed in response.resources:
        assignment = endpoint_pb2.ClusterLoadAssignment()
        packed.Unpack(assignment)
        for locality in assignment.endpoints:
            for e in locality.lb_endpoints:
                if e.health_status == health_check_pb2.HEALTHY:
                    ports.add(e.endpoint.address.socket_address.port_value)
    return response.version_info, ports


def _scrape(http_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One GET /metrics over a fresh connection -> {(sample name, sorted labels): value}."""
    text = urllib.request.urlopen(f"{http_url}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _backend_id(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    [backend] = {dict(labels)["backend"] for name, labels in samples if name == "capmesh_backend_state"}
    return backend


async def _upload(channel: grpc.aio.Channel, data: bytes) -> str:
    async def parts():
        yield files_pb2.UploadFileRequest(header=files_pb2.UploadHeader(name="w.bin"))
        yield files_pb2.UploadFileRequest(chunk=data)

    answer = await file_service_pb2_grpc.FileServiceStub(channel).UploadFile(parts())
    return answer.file.file_id


async def _download(channel: grpc.aio.Channel, file_id: str) -> bytes:
    stub = file_service_pb2_grpc.FileServiceStub(channel)
    return b"".join([r.data async for r in stub.DownloadFile(files_pb2.DownloadFileRequest(file_id=file_id))])


async def _run_job(channel: grpc.aio.Channel, prompt: str, poll: Callable[[], grpc.aio.Channel]) -> None:
    request = any_pb2.Any()
    request.Pack(llm_service_pb2.ChatRequest(messages=chat_request(prompt).messages))
    submitted = await job_service_pb2_grpc.JobServiceStub(channel).SubmitJob(
        jobs_pb2.SubmitJobRequest(method=CHAT, request=request)
    )

    async def done() -> bool:
        operations = operations_pb2_grpc.OperationsStub(poll())
        operation = await operations.GetOperation(operations_pb2.GetOperationRequest(name=submitted.operation.name))
        assert not operation.HasField("error"), operation.error
        return operation.done

    await eventually(done, what="the job to end")


@pytest.mark.e2e
async def test_two_workers_share_one_port_the_registry_jobs_and_files(gateway: Gateway):
    workers = gateway.workers
    channels: list[grpc.aio.Channel] = []
    try:
        # Many calls over fresh connections all succeed, and both workers serve some.
        by_worker = await _on_two_workers(gateway, channels)
        served = set(by_worker)
        for i in range(12):
            channel = fresh_channel(gateway.address)
            channels.append(channel)
            for j in range(3):
                served.add(await _until_served(gateway, channel, f"call-{i}-{j}"))
        assert served <= workers and len(served) == WORKERS

        # /metrics, whichever worker a scrape reaches, reports the whole gateway: every Chat the
        # backend served (each worker served only some), and the backend's state.
        served_calls = len(gateway.calls)
        for _ in range(4):
            samples = await asyncio.to_thread(_scrape, gateway.http_url)
            assert samples[("capmesh_rpc_requests_total", (("code", "OK"), ("method", CHAT)))] == served_calls
            state = (
                "capmesh_backend_state",
                (("backend", _backend_id(samples)), ("capability", "echo"), ("state", "AVAILABLE")),
            )
            assert samples[state] == 1

        first, second = by_worker.values()
        # A backend registering with either worker is seen by watches on both.
        service, _ = build_echo_service("echo-2", ServerSettings(gateway=gateway.address, grace_period_s=0))
        second_backend = await create_server(service)
        try:
            for channel in (first, second):
                await asyncio.wait_for(_backends_seen(channel, "echo", 2), READY_TIMEOUT_S)
            # xDS on either worker serves the same endpoints, under the same version (a digest).
            ports = {gateway.backend_port, second_backend.port}

            async def same_endpoints() -> bool:
                answers = [await _endpoints(channel, "echo") for channel in (first, second)]
                return answers[0] == answers[1] and answers[0][1] == ports

            await eventually(same_endpoints, what="the same xDS endpoints on both workers")
        finally:
            await second_backend.shutdown(grace_s=0)

        # A file uploaded through one worker downloads through the other, and over HTTP (the
        # same port for every worker too) through fresh connections.
        data = os.urandom(300_000)
        file_id = await _upload(first, data)
        assert await _download(second, file_id) == data
        url = f"{gateway.http_url}/v1/files/{file_id}:download"
        for _ in range(6):
            assert await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read()) == data

        # A job submitted to one worker runs once, though both run job runners.
        await _run_job(first, "job-once", poll=lambda: second)
        assert [p for p, _ in gateway.calls].count("job-once") == 1

        # A worker that dies is started again; the port keeps serving meanwhile.
        killed = next(iter(served))
        os.kill(killed, signal.SIGKILL)
        await eventually(lambda: len(gateway.workers - workers - {killed}) == 1, what="a new worker")
        channel = fresh_channel(gateway.address)
        channels.append(channel)
        await _until_served(gateway, channel, "after-restart")
    finally:
        for channel in channels:
            await channel.close()

    # SIGTERM to the supervisor stops every worker, gracefully: exit 0.
    alive = gateway.workers
    gateway.process.popen.send_signal(signal.SIGTERM)
    assert gateway.process.popen.wait(30) == 0
    for pid in alive:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_workers_need_redis():
    with pytest.raises(SettingsError, match=r"workers.*redis_url"):
        GatewaySettings(workers=2)


def test_a_worker_that_cannot_start_stops_the_gateway():
    """Every worker fails its start on an unreachable Redis: the supervisor exits 2 and says why."""
    args = ["--port", "0", "--http-port", "0", "--workers", "2", "--redis", "redis://127.0.0.1:1/0"]
    result = subprocess.run(
        [sys.executable, "-m", "capmesh.cli.main", "gateway", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "before serving" in result.stderr and "listening" not in result.stdout


async def test_a_worker_that_keeps_crashing_is_restarted_later_each_time_then_stops_the_gateway(tmp_path, redis_server):
    """The restarts back off (0.5 s, 1 s, 2 s, 4 s); the fifth exit within a minute is a crash loop."""
    redis_server.flush()
    args = ["--port", "0", "--http-port", "0", "--workers", "2", "--redis", redis_server.url]
    args += ["--set", "log_level=warning", "--set", f"files_dir={tmp_path / 'files'}"]
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        command = [sys.executable, "-m", "capmesh.cli.main", "gateway", *args]
        popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert popen.stdout is not None and "listening on" in await asyncio.to_thread(popen.stdout.readline)
        seen = worker_pids(popen.pid)
        victim = next(iter(seen))
        for _ in range(restarts.CRASH_LOOP_EXITS - 1):
            os.kill(victim, signal.SIGKILL)
            # the same worker, started again: the one pid not seen before
            [victim] = await eventually(lambda: worker_pids(popen.pid) - seen, what="the worker started again")
            seen.add(victim)
        os.kill(victim, signal.SIGKILL)
        assert await asyncio.to_thread(popen.wait, 60) == 1
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    said = stderr_path.read_text()
    for delay in ("0.5", "1.0", "2.0", "4.0"):
        assert f"starting it again in {delay}s" in said, said
    assert f"is crash-looping: it exited {restarts.CRASH_LOOP_EXITS} times within 60s" in said, said

"""Several hosts as one mesh, in network namespaces: Redis, two gateways and two echo backends, each
in a namespace of its own with its own address on a private bridge, as on five machines.

Under steady load from this process (the root namespace, on the bridge too): unary calls and short
streams through a client that knows both gateways, and a job submitted every half second, the
test cuts one backend host's link (its veth goes down: packets vanish, nothing answers, as when a
host loses power), restores it, then does the same to one gateway host. It prints what it counted:
failed unary calls and streams in each phase, how long the registry took to mark the backend
UNAVAILABLE, how long each host took to be back, and jobs lost or completed twice. It asserts the
targets that hold: after a backend host is cut, no unary call that started after the cut fails and
the registry marks it UNAVAILABLE within 2 s; no job is lost or completes twice. A gateway host cut
off: the client's channel notices the silent gateway by its own keepalive, the calls in flight there
fail with UNAVAILABLE only, and new calls go through the other gateway within seconds.

Namespaces need root and `ip` (iproute2); where they cannot be made the test is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import redis
from google.protobuf import any_pb2

from capmesh.client import aio_channel
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb2
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import STREAM_CHAT, chat_request, stream_request
from tests.jobs.support import ROOT, Client, event_types, eventually

pytestmark = pytest.mark.e2e

HOSTS = ("redis", "gw-a", "gw-b", "be-a", "be-b")
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 5.0
DETECT_TARGET_S = 2.0


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _why_no_namespaces() -> str:
    """Empty when network namespaces, veth pairs and bridges can be made here; else the reason."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cmprobe{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return ""


@dataclass
class Network:
    """A bridge in the root namespace and one namespace per host, joined to it by a veth pair; the
    root end of each pair is the host's link (`cut` sets it down)."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}"
        self.bridge = f"cm{self.tag}br"

    def namespace(self, host: str) -> str:
        return f"cm{self.tag}{HOSTS.index(host)}"

    def link(self, host: str) -> str:
        return f"cm{self.tag}{HOSTS.index(host)}r"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS.index(host) + 2}"

    def _must(self, *args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def create(self) -> None:
        self._must("link", "add", self.bridge, "type", "bridge")
        self._must("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        self._must("link", "set", self.bridge, "up")
        for host in HOSTS:
            namespace, outside, inside = self.namespace(host), self.link(host), f"cm{self.tag}{HOSTS.index(host)}n"
            self._must("netns", "add", namespace)
            self._must("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._must("link", "set", inside, "netns", namespace)
            self._must("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", inside)
            self._must("-n", namespace, "link", "set", inside, "up")
            self._must("-n", namespace, "link", "set", "lo", "up")
            self._must("link", "set", outside, "master", self.bridge, "up")

    async def remove(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()
        for host in HOSTS:
            _ip("netns", "del", self.namespace(host))  # takes its end of the veth pair, and so the pair
        _ip("link", "del", self.bridge)

    def cut(self, host: str) -> None:
        self._must("link", "set", self.link(host), "down")

    def restore(self, host: str) -> None:
        self._must("link", "set", self.link(host), "up")

    async def start(self, host: str, args: list[str], env: dict[str, str], marker: str | None) -> str:
        """Starts `args` inside the host's namespace; returns its line containing `marker` (None:
        at once, with "")."""
        process = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.namespace(host),
            *args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.processes.append(process)
        assert process.stdout is not None
        while marker is not None:
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)).decode()
            if not line:
                raise RuntimeError(f"{args} in {host} exited before it served")
            if marker in line:
                return line.strip()
        return ""


@pytest.fixture
async def network() -> AsyncIterator[Network]:
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(f"cannot make network namespaces here: {reason}")
    network = Network()
    try:
        network.create()
        yield network
    finally:
        await network.remove()


async def _start_mesh(network: Network, tmp_path) -> tuple[str, str]:
    """Redis, two gateways and two backends, each on its host; the gateways' gRPC addresses."""
    redis_host = network.address("redis")
    redis_args = ["--bind", redis_host, "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    await network.start("redis", [shutil.which("redis-server") or "redis-server", *redis_args], {}, None)
    await eventually(lambda: _redis_answers(redis_host), what="redis to answer")
    gateway_env = {
        "CAPMESH_GATEWAY_PORT": "0",
        "CAPMESH_GATEWAY_HTTP_PORT": "0",
        "CAPMESH_GATEWAY_REDIS_URL": f"redis://{redis_host}:6379/0",
        "CAPMESH_GATEWAY_HEARTBEAT_INTERVAL_S": "0.5",
        "CAPMESH_GATEWAY_LEASE_S": "10",
        "CAPMESH_GATEWAY_JOB_LEASE_S": "3",
        "CAPMESH_GATEWAY_LOG_LEVEL": "error",
        "PYTHONPATH": str(ROOT),
    }
    banners = await asyncio.gather(
        *(
            network.start(
                host,
                [sys.executable, "-m", "tests.jobs.gateway_process"],
                {
                    **gateway_env,
                    "CAPMESH_GATEWAY_HOST": network.address(host),
                    "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / host),
                },
                "listening on",
            )
            for host in ("gw-a", "gw-b")
        )
    )
    gateways = [banner.split("grpc ", 1)[1].split(" ", 1)[0] for banner in banners]
    await asyncio.gather(
        *(
            network.start(
                host,
                [sys.executable, "-m", "tests.scale.netns_backend", host, network.address(host), ",".join(gateways)],
                {"PYTHONPATH": str(ROOT)},
                "listening on",
            )
            for host in ("be-a", "be-b")
        )
    )
    return gateways[0], gateways[1]


def _redis_answers(host: str) -> bool:
    try:
        return bool(redis.Redis(host=host, port=6379, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


async def _states(client: Client) -> dict[str, int]:
    """backend address -> state in the gateway's view (missing: not registered there)."""
    try:
        view = await client.registry.GetCapability(registry_pb2.GetCapabilityRequest(capability="echo"), timeout=1)
    except grpc.aio.AioRpcError:
        return {}
    return {b.backend.address.rsplit(":", 1)[0]: b.state for b in view.capability.backends}


@dataclass
class Load:
    """Steady load through a client that knows both gateways; every outcome with its start time."""

    channel: grpc.aio.Channel
    unary: list[tuple[float, grpc.StatusCode]] = field(default_factory=list)
    streams: list[tuple[float, grpc.StatusCode]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def unary_loop(self) -> None:
        stub = llm_service_pb2_grpc.LlmServiceStub(self.channel)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await stub.Chat(chat_request("hello"), timeout=CALL_TIMEOUT_S)
                self.unary.append((started, grpc.StatusCode.OK))
            except grpc.aio.AioRpcError as exc:
                self.unary.append((started, exc.code()))
            await asyncio.sleep(0.02)  # a light client: about 50 calls a second per loop

    async def stream_loop(self) -> None:
        stub = llm_service_pb2_grpc.LlmServiceStub(self.channel)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async for _ in stub.StreamChat(stream_request("slow:6"), timeout=CALL_TIMEOUT_S):
                    pass
                self.streams.append((started, grpc.StatusCode.OK))
            except grpc.aio.AioRpcError as exc:
                self.streams.append((started, exc.code()))

    async def job_loop(self) -> None:
        client = Client(self.channel)
        request = any_pb2.Any()
        request.Pack(stream_request("slow:4"))
        while not self.stop.is_set():
            try:
                reply = await client.jobs.SubmitJob(
                    jobs_pb2.SubmitJobRequest(method=STREAM_CHAT, request=request), timeout=CALL_TIMEOUT_S
                )
                self.jobs.append(reply.operation.name.split("/", 1)[1])
            except grpc.aio.AioRpcError:
                pass  # a submission that failed made no job; the count is of jobs that exist
            await asyncio.sleep(0.5)  # one job every half second

    def codes(self, outcomes: list[tuple[float, grpc.StatusCode]], since: float, until: float) -> dict[str, int]:
        """How many calls that started in [since, until) failed, by status code."""
        failed = [
            code.name for started, code in outcomes if since <= started < until and code is not grpc.StatusCode.OK
        ]
        return {name: failed.count(name) for name in sorted(set(failed))}

    def failed(self, outcomes: list[tuple[float, grpc.StatusCode]], since: float, until: float) -> int:
        return sum(1 for started, code in outcomes if since <= started < until and code is not grpc.StatusCode.OK)


async def test_hosts_cut_off_under_load(network, tmp_path):
    started_at = time.monotonic()
    address_a, address_b = await _start_mesh(network, tmp_path)
    view_a, view_b = Client(aio_channel(address_a)), Client(aio_channel(address_b))
    backend_a, backend_b = network.address("be-a"), network.address("be-b")
    available = registry_pb2.BACKEND_STATE_AVAILABLE

    async def both_available(view: Client) -> bool:
        states = await _states(view)
        return states.get(backend_a) == available and states.get(backend_b) == available

    await eventually(lambda: both_available(view_a), what="gateway A to see both backends")
    await eventually(lambda: both_available(view_b), what="gateway B to see both backends")
    load = Load(aio_channel(f"{address_a},{address_b}"))
    workers = [asyncio.ensure_future(load.unary_loop()) for _ in range(3)]
    workers += [asyncio.ensure_future(load.stream_loop()), asyncio.ensure_future(load.job_loop())]
    report: dict[str, object] = {}
    try:
        await eventually(lambda: len(load.unary) >= 20 and len(load.streams) >= 2, what="steady load")

        # A backend host cut off: its calls in flight fail over inside the gateway; the registry
        # of both gateways marks it not AVAILABLE.
        cut_backend = time.monotonic()
        network.cut("be-a")

        async def backend_a_out() -> bool:
            views = [await _states(view_a), await _states(view_b)]
            return all(v.get(backend_a, 0) != available for v in views)

        await eventually(backend_a_out, timeout_s=15, what="the registry to mark the cut backend")
        detected_s = time.monotonic() - cut_backend
        report["backend cut: marked not AVAILABLE after s"] = round(detected_s, 2)
        await asyncio.sleep(2.0)  # the load runs on the one backend left for a while
        network.restore("be-a")
        restored = time.monotonic()
        await eventually(lambda: both_available(view_a), timeout_s=15, what="backend A back in gateway A's view")
        await eventually(lambda: both_available(view_b), timeout_s=15, what="backend A back in gateway B's view")
        report["backend cut: back AVAILABLE after restore, s"] = round(time.monotonic() - restored, 2)
        backend_phase = (cut_backend, time.monotonic())

        # A gateway host cut off: the client fails over to the other gateway.
        await asyncio.sleep(1.0)  # steady load again before the next cut
        cut_gateway = time.monotonic()
        network.cut("gw-a")
        await asyncio.sleep(5.0)  # the load runs through gateway B alone for a while
        network.restore("gw-a")
        restored = time.monotonic()
        await eventually(lambda: both_available(view_a), timeout_s=20, what="gateway A to serve again")
        report["gateway cut: gateway A serving again after restore, s"] = round(time.monotonic() - restored, 2)
        gateway_phase = (cut_gateway, time.monotonic())
        await asyncio.sleep(1.0)  # steady load after both restores
    finally:
        load.stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await load.channel.close()

    ended = time.monotonic()
    first_ok_after_gateway_cut = min(
        (s for s, code in load.unary if s >= gateway_phase[0] and code is grpc.StatusCode.OK), default=ended
    )
    report.update(
        {
            "unary calls": len(load.unary),
            "streams": len(load.streams),
            "backend cut: failed unary calls (all)": load.failed(
                load.unary, backend_phase[0] - CALL_TIMEOUT_S, backend_phase[1]
            ),
            "backend cut: failed unary calls started after the cut": load.failed(load.unary, *backend_phase),
            "backend cut: failed streams": load.failed(
                load.streams, backend_phase[0] - CALL_TIMEOUT_S, backend_phase[1]
            ),
            "gateway cut: failed unary calls": load.failed(
                load.unary, gateway_phase[0] - CALL_TIMEOUT_S, gateway_phase[1]
            ),
            "gateway cut: failed streams": load.failed(
                load.streams, gateway_phase[0] - CALL_TIMEOUT_S, gateway_phase[1]
            ),
            "gateway cut: failed unary calls by code": load.codes(
                load.unary, gateway_phase[0] - CALL_TIMEOUT_S, gateway_phase[1]
            ),
            "gateway cut: failed streams by code": load.codes(
                load.streams, gateway_phase[0] - CALL_TIMEOUT_S, gateway_phase[1]
            ),
            "gateway cut: first successful unary call started after s": round(
                first_ok_after_gateway_cut - gateway_phase[0], 2
            ),
        }
    )

    # Every job submitted ends once: none lost, none completed twice.
    ends: dict[str, list[str]] = {}
    for job_id in load.jobs:
        await view_b.wait(job_id, timeout_s=30)
        types = event_types(await view_b.events(job_id))
        ends[job_id] = [t for t in types if t in ("SUCCEEDED", "FAILED", "CANCELLED")]
    report["jobs submitted"] = len(load.jobs)
    lost = sum(1 for e in ends.values() if e != ["SUCCEEDED"] and len(e) <= 1)
    twice = sum(1 for e in ends.values() if len(e) > 1)
    report["jobs lost (not succeeded)"], report["jobs completed twice"] = lost, twice
    await view_a.close()
    await view_b.close()
    report["wall time, s"] = round(time.monotonic() - started_at, 1)
    print("\nmulti-host test in network namespaces:")
    for name, value in report.items():
        print(f"  {name}: {value}")

    assert detected_s <= DETECT_TARGET_S
    assert load.failed(load.unary, *backend_phase) == 0
    assert (lost, twice) == (0, 0)
    # A silent gateway: the calls in flight on it fail as UNAVAILABLE (the client's 2 s keepalive with
    # a 1 s timeout), and the client's next calls go to the other gateway within seconds.
    assert set(report["gateway cut: failed unary calls by code"]) <= {"UNAVAILABLE"}
    assert set(report["gateway cut: failed streams by code"]) <= {"UNAVAILABLE"}
    assert report["gateway cut: first successful unary call started after s"] <= 5.0

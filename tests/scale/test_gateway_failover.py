"""Two gateways on one Redis, a backend registered with both addresses (`--gateway A,B`): SIGKILL
gateway A under steady load, and calls through B never fail (the backend's heartbeats move to B and
keep its shared lease alive); a client given both addresses loses at most the calls that were in
flight on A, each with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import pytest

from capmesh.client import aio_channel
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import chat_request
from tests.gateway.test_failover import BackendProcess
from tests.jobs.support import Client, Process, eventually, gateway_env

pytestmark = pytest.mark.e2e

LEASE_S = 3.0
HEARTBEAT_S = 0.5
WORKERS = 3


@pytest.fixture
async def two_gateways(tmp_path, redis_server):
    redis_server.flush()
    settings = dict(
        port=0,
        http_port=0,
        redis_url=redis_server.url,
        heartbeat_interval_s=HEARTBEAT_S,
        lease_s=LEASE_S,
        files_dir=tmp_path / "files",
        log_level="error",
    )
    gateways = [Process(["-m", "tests.jobs.gateway_process"], env=gateway_env(**settings)) for _ in range(2)]
    yield [(g, g.line.split("grpc ", 1)[1].split(" ", 1)[0]) for g in gateways]
    for gateway in gateways:
        gateway.kill()


async def test_a_gateway_killed_under_load_loses_no_call_through_the_other(two_gateways):
    (gateway_a, address_a), (_, address_b) = two_gateways
    backend = BackendProcess("only")
    await backend.start(f"{address_a},{address_b}")
    through_b, through_both = aio_channel(address_b), aio_channel(f"{address_a},{address_b}")
    viewer = Client(through_b)
    try:
        await eventually(lambda: viewer.available_backends("echo"), what="B to see the backend")
        results: dict[str, list[tuple[float, grpc.StatusCode | None]]] = {"B": [], "A,B": []}
        stop = asyncio.Event()

        async def load(name: str, channel: grpc.aio.Channel) -> None:
            stub = llm_service_pb2_grpc.LlmServiceStub(channel)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await stub.Chat(chat_request("hello"), timeout=10)
                    results[name].append((started, None))
                except grpc.aio.AioRpcError as exc:
                    results[name].append((started, exc.code()))

        workers = [
            asyncio.ensure_future(load(name, channel))
            for name, channel in (("B", through_b), ("A,B", through_both))
            for _ in range(WORKERS)
        ]
        await eventually(lambda: len(results["A,B"]) >= 30, what="load before the kill")
        killed_at = time.monotonic()
        gateway_a.kill()
        # Past the lease: had the heartbeats stayed with A, B would have dropped the backend by now.
        await asyncio.sleep(2 * LEASE_S)  # keep the load running over the lease, not a readiness wait
        stop.set()
        await asyncio.gather(*workers)

        failed_b = [r for r in results["B"] if r[1] is not None]
        failed_both_count = sum(1 for r in results["A,B"] if r[1] is not None)
        print(
            f"\ngateway A SIGKILLed under load: through B {len(failed_b)} of {len(results['B'])} calls failed; "
            f"through A,B {failed_both_count} of {len(results['A,B'])}"
        )
        assert failed_b == [], f"{len(failed_b)} of {len(results['B'])} calls through B failed"
        late_b = [started for started, _ in results["B"] if started > killed_at + LEASE_S + 1]
        assert late_b, "calls through B went on after the lease"
        failed_both = [(started, code) for started, code in results["A,B"] if code is not None]
        # At most the calls in flight on A when it died, and those end UNAVAILABLE.
        assert len(failed_both) <= WORKERS, failed_both
        assert all(code == grpc.StatusCode.UNAVAILABLE and started <= killed_at for started, code in failed_both)
        assert [s for s, code in results["A,B"] if s > killed_at + LEASE_S + 1 and code is None]

        # The CLI takes both addresses from CAPMESH_ADDRESS and answers from the survivor.
        status = subprocess.run(
            [sys.executable, "-m", "capmesh.cli.main", "status"],
            env={**os.environ, "CAPMESH_ADDRESS": f"{address_a},{address_b}", "COLUMNS": "250"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and backend.address in status.stdout, status.stderr
    finally:
        await through_b.close()
        await through_both.close()
        backend.kill()
        await backend.wait()

"""Proxyless gRPC clients (grpcio's own xDS client, in a process of their own) against a real
gateway and real echo backends that share a mesh secret (as under `capmesh up`): calls reach every
healthy backend, a backend killed with SIGKILL stops getting calls within 2 s, a backend that joins
starts getting them, and a client without the mesh secret is refused by the backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capmesh.services.runtime.settings import MESH_SECRET_ENV
from capmesh.services.runtime.trust import mesh_metadata
from tests.support.processes import ServerProcess
from tests.xds.support import GatewayProcess, XdsClientProcess, write_bootstrap

pytestmark = pytest.mark.e2e

WITHIN_S = 2.0
MESH = {MESH_SECRET_ENV: "xds-test-mesh-secret"}


def _backend(name: str, gateway: str) -> ServerProcess:
    return ServerProcess.python_module("tests.xds.echo_backend", name, "--gateway", gateway, env=MESH)


@pytest.fixture
def gateway() -> Iterator[GatewayProcess]:
    process = GatewayProcess(MESH)
    yield process
    process.stop()


@pytest.mark.timeout(240)
def test_proxyless_calls_follow_the_registry(gateway: GatewayProcess, tmp_path: Path) -> None:
    first, second = _backend("A", gateway.address), _backend("B", gateway.address)
    third: ServerProcess | None = None
    client: XdsClientProcess | None = None
    outsider: XdsClientProcess | None = None
    try:
        gateway.wait_available(2, metadata=mesh_metadata(MESH[MESH_SECRET_ENV]))
        bootstrap = write_bootstrap(tmp_path, gateway.address)
        client = XdsClientProcess("echo", bootstrap, MESH)
        outsider = XdsClientProcess("echo", bootstrap, {MESH_SECRET_ENV: ""})
        start = time.monotonic()
        client.wait_answers(lambda seen: {"A", "B"} <= set(seen), start, 60, "calls to reach both backends")
        outsider.wait_answers(lambda seen: len(seen) >= 5, start, 60, "the outsider's first answers")
        assert set(outsider.since(start)) == {"!UNAUTHENTICATED"}
        outsider.stop()

        first.process.kill()  # SIGKILL: no goodbye, no deregistration
        killed = time.monotonic()
        client.wait_answers(
            lambda seen: len(seen) >= 50, killed + WITHIN_S, 30, f"50 answers more than {WITHIN_S}s after the kill"
        )
        later = client.since(killed + WITHIN_S)
        assert set(later) == {"B"}, f"after {WITHIN_S}s only B answers: {sorted(set(later))}"

        third = _backend("C", gateway.address)
        gateway.wait_available(2, metadata=mesh_metadata(MESH[MESH_SECRET_ENV]))  # B and C
        joined = time.monotonic()
        client.wait_answers(lambda seen: "C" in seen, joined, 30, "calls to reach the new backend")
        assert set(client.since(joined)) <= {"B", "C"}
    finally:
        for process in (client, outsider):
            if process is not None:
                process.stop()
        for backend in (first, second, third):
            if backend is not None:
                backend.stop()

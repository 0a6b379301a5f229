"""`capmesh up` as a supervisor: a child killed with SIGKILL comes back while the others keep serving,
a restarted gateway comes back on its ports, and a child that crash-loops stops the mesh saying so."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest
from rich.console import Console

from capmesh.cli import gateway as up_cli
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime import restarts
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.support.processes import capmesh_up

RECOVERY_TIMEOUT_S = 120.0


def pid_listening_on(address: str) -> int:
    port = int(address.rsplit(":", 1)[1])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return connection.pid
    raise AssertionError(f"nothing listens on {address}")


def available_tts(gateway: str) -> list[str]:
    """Addresses of the AVAILABLE tts backends, [] while the gateway cannot answer."""
    try:
        with grpc.insecure_channel(gateway) as channel:
            view = registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
                pb.ListCapabilitiesRequest(), timeout=5
            )
    except grpc.RpcError:
        return []
    return sorted(
        b.backend.address
        for c in view.capabilities
        if c.capability == "tts"
        for b in c.backends
        if b.state == pb.BACKEND_STATE_AVAILABLE
    )


def eventually(check, what: str):
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling a condition, not waiting for a fixed time
    return value


def synthesize(gateway: str) -> int:
    with grpc.insecure_channel(gateway) as channel:
        stub = tts_service_pb2_grpc.TtsServiceStub(channel)
        replies = list(stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="Hi."), timeout=60))
    return sum(len(r.chunk.data) for r in replies if r.HasField("chunk"))


@pytest.mark.e2e
def test_a_killed_child_comes_back_and_the_others_never_stop(tmp_path):
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("offline: true\ncapabilities:\n  tts:\n    replicas: 2\n")
    with capmesh_up(["-f", str(mesh_file)], tmp_path / "logs") as mesh:
        gateway = mesh["gateway (gRPC)"]
        pids = {name: pid_listening_on(mesh[name]) for name in ("gateway (gRPC)", "tts", "tts-2")}

        os.kill(pids["tts-2"], signal.SIGKILL)
        assert synthesize(gateway) > 0  # the other replica serves meanwhile
        back = eventually(
            lambda: len(addresses := available_tts(gateway)) == 2 and mesh["tts-2"] not in addresses and addresses,
            "tts-2 to come back on a new port",
        )
        (new_address,) = set(back) - {mesh["tts"]}
        assert pid_listening_on(new_address) not in pids.values()
        assert pid_listening_on(gateway) == pids["gateway (gRPC)"]  # never stopped
        assert pid_listening_on(mesh["tts"]) == pids["tts"]

        # The gateway itself: it comes back on the same port and both services register again.
        os.kill(pids["gateway (gRPC)"], signal.SIGKILL)
        eventually(lambda: len(available_tts(gateway)) == 2, "the gateway to come back with both backends")
        assert pid_listening_on(gateway) != pids["gateway (gRPC)"]
        assert pid_listening_on(mesh["tts"]) == pids["tts"]
        assert synthesize(gateway) > 0


async def test_a_crash_looping_child_stops_the_mesh_naming_it_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(restarts, "RESTART_BACKOFF_BASE_S", 0.01)
    script = "print('crashy listening on 127.0.0.1:1', flush=True); import sys; sys.exit(3)"
    child = up_cli._Child("crashy", [sys.executable, "-c", script], tmp_path / "crashy.log")
    mesh = up_cli.Mesh(
        up_cli.Plan(services={"crashy": ({}, 1)}),
        host="127.0.0.1",
        port=0,
        http_port=0,
        redis_url="",
        timeout_s=30,
        log_dir=Path(tmp_path),
    )
    mesh.children.append(child)
    console = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - the console's output is not looked at
    await child.start({**os.environ}, 30)
    stop = asyncio.Event()
    supervisor = up_cli._Supervisor(mesh, stop, console)
    await asyncio.wait_for(supervisor.keep(child), 60)

    assert stop.is_set()
    assert "crashy is crash-looping" in supervisor.crash_loop
    assert f"exited {restarts.CRASH_LOOP_EXITS} times" in supervisor.crash_loop and "code 3" in supervisor.crash_loop

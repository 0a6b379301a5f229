"""The runtime in a real process: grpcurl against reflection, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.support.processes import ServerProcess

pytestmark = pytest.mark.e2e

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def stepper_process():
    with ServerProcess.python_module("tests.runtime.serve_stepper", "0.05") as server:
        server.wait_serving()
        yield server


def grpcurl(*args: str) -> str:
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_lists_describes_and_checks_health(stepper_process):
    services = grpcurl(stepper_process.address, "list").split()
    assert {
        "capmesh.tts.v1.TtsService",
        "grpc.health.v1.Health",
        "capmesh.admin.v1.AdminService",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)
    assert "StreamSynthesize" in grpcurl(stepper_process.address, "describe", "capmesh.tts.v1.TtsService")
    health = json.loads(
        grpcurl(
            "-d", '{"service": "capmesh.tts.v1.TtsService"}', stepper_process.address, "grpc.health.v1.Health/Check"
        )
    )
    assert health["status"] == "SERVING"
    out = grpcurl("-d", '{"text": "steps:2"}', stepper_process.address, "capmesh.tts.v1.TtsService/StreamSynthesize")
    assert out.count('"result"') == 1


def test_sigterm_finishes_the_stream_in_flight_and_reports_not_serving():
    with ServerProcess.python_module("tests.runtime.serve_stepper", "0.05") as server:
        server.wait_serving()
        statuses: list[int] = []
        with grpc.insecure_channel(server.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

            def collect() -> None:
                try:
                    for reply in watch:
                        statuses.append(reply.status)
                except grpc.RpcError:  # the server went away: the watch ends
                    pass

            watcher = threading.Thread(target=collect, daemon=True)
            watcher.start()
            stream = tts_service_pb2_grpc.TtsServiceStub(channel).StreamSynthesize(
                tts_service_pb2.StreamSynthesizeRequest(text="steps:30")
            )
            kinds = [next(stream).WhichOneof("event")]
            server.process.send_signal(signal.SIGTERM)
            kinds += [m.WhichOneof("event") for m in stream]
            assert kinds.count("chunk") == 30 and kinds[-1] == "result"
            assert server.process.wait(30) == 0
            watcher.join(5)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses

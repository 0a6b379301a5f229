"""`capmesh up -f FILE` as a user runs it: real processes, settings and replicas from the file; and
`capmesh models pull`, whose offline refusal is all a test may exercise (never a download)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.catalog import NAMES
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.support.processes import capmesh_up

ROOT = Path(__file__).resolve().parents[2]
CAPMESH = [sys.executable, "-m", "capmesh.cli.main"]
ENV = {**os.environ, "COLUMNS": "250"}


def up(mesh_file: Path, log_dir: Path):
    """Runs `capmesh up -f` until its table is printed; yields the table's process -> address."""
    return capmesh_up(["-f", str(mesh_file)], log_dir)


def backends(address: str) -> dict[str, list[pb.BackendStatus]]:
    with grpc.insecure_channel(address) as channel:
        view = registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
            pb.ListCapabilitiesRequest(), timeout=10
        )
    return {c.capability: list(c.backends) for c in view.capabilities}


@pytest.mark.e2e
def test_up_with_the_offline_profile_serves_every_capability_through_the_gateway(tmp_path):
    with up(ROOT / "deploy" / "offline.yaml", tmp_path) as mesh:
        registered = backends(mesh["gateway (gRPC)"])
        assert set(registered) == set(NAMES)
        assert all(b.state == pb.BACKEND_STATE_AVAILABLE for items in registered.values() for b in items)
        with httpx.Client(base_url=mesh["gateway (HTTP)"], timeout=120) as http:
            chat = http.post(
                "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            )
            assert chat.status_code == 200, chat.text
            speech = http.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "alloy"})
            assert speech.status_code == 200, speech.text
            assert len(speech.content) > 100


@pytest.mark.e2e
def test_up_runs_each_replica_as_a_process_with_the_files_settings(tmp_path, redis_server):
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("offline: true\ncapabilities:\n  tts:\n    replicas: 2\n    max_text_chars: 20\n")
    # A secret of the test's own: the services answer only callers holding it (`capmesh up` would make one).
    secret = (("x-capmesh-mesh-secret", "deploy-test-secret"),)
    redis_server.flush()
    args = ["-f", str(mesh_file), "--redis", redis_server.url, "--workers", "2"]
    with capmesh_up(args, tmp_path / "logs", env={**os.environ, "CAPMESH_MESH_SECRET": secret[0][1]}) as mesh:
        assert {"tts", "tts-2"} <= set(mesh)
        gateway_port = int(mesh["gateway (gRPC)"].rsplit(":", 1)[1])
        connections = psutil.net_connections("tcp")
        listening = {c.pid for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == gateway_port}
        assert len(listening) == 2  # --workers 2: two gateway processes on one port
        registered = backends(mesh["gateway (gRPC)"])
        assert list(registered) == ["tts"]
        assert len(registered["tts"]) == 2
        assert len({b.backend.address for b in registered["tts"]}) == 2
        for replica in ("tts", "tts-2"):
            # The file's limit reached each process: 21 characters are one too many.
            with grpc.insecure_channel(mesh[replica]) as channel:
                stub = tts_service_pb2_grpc.TtsServiceStub(channel)
                with pytest.raises(grpc.RpcError) as refused:
                    request = tts_service_pb2.StreamSynthesizeRequest(text="x" * 21)
                    list(stub.StreamSynthesize(request, metadata=secret, timeout=30))
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "limit is 20" in str(refused.value.details())
                request = tts_service_pb2.StreamSynthesizeRequest(text="Hello.")
                assert list(stub.StreamSynthesize(request, metadata=secret, timeout=60))
    assert (tmp_path / "logs" / "tts-2.log").exists()


def test_up_refuses_a_bad_file_before_starting_anything(tmp_path):
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("capabilities:\n  tts:\n    replicas: 0\n")
    started = time.monotonic()
    done = subprocess.run(
        [*CAPMESH, "up", "-f", str(mesh_file), "--log-dir", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{mesh_file}:3: capabilities.tts.replicas:" in done.stderr
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
    assert time.monotonic() - started < 30


def test_up_only_must_name_a_capability_of_the_file(tmp_path):
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("capabilities:\n  tts: {}\n")
    done = subprocess.run(
        [*CAPMESH, "up", "-f", str(mesh_file), "--only", "llm"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert done.returncode == 2 and "does not describe llm" in done.stderr, done.stderr


def test_models_pull_fails_at_once_when_the_hub_is_offline():
    done = subprocess.run(
        [*CAPMESH, "models", "pull", "-f", str(ROOT / "deploy" / "gpu.yaml")],
        capture_output=True,
        text=True,
        env={**ENV, "HF_HUB_OFFLINE": "1"},
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "offline" in done.stderr and "Qwen/Qwen2.5-7B-Instruct" in done.stderr
    assert "pulling" not in done.stdout


def test_models_pull_lists_only_hub_models():
    from capmesh.cli.deploy import hub_models
    from capmesh.mesh.spec import load_mesh

    assert hub_models(load_mesh(ROOT / "deploy" / "offline.yaml")) == []
    assert hub_models(load_mesh(ROOT / "deploy" / "remote.yaml")) == []
    assert set(hub_models(load_mesh(ROOT / "deploy" / "gpu.yaml"))) == {
        "Qwen/Qwen2.5-7B-Instruct",
        "facebook/mms-tts-eng",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "stabilityai/stable-diffusion-xl-base-1.0",
    }

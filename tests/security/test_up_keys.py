"""`CAPMESH_GATEWAY_API_KEYS=k CAPMESH_API_KEY=k capmesh up` starts (its readiness probe and its
services carry the right credentials: a mesh secret it makes itself), and the CLI works with the
key, from the variable or `--api-key`; the services it started refuse calls that bypass the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import httpx
import pytest

from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.support.processes import ROOT, capmesh_up

pytestmark = pytest.mark.e2e

KEY = "up-test-key"


def capmesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capmesh.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_up_with_keys_and_every_cli_command_with_the_key(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPMESH_")}
    up_env = {**base, "CAPMESH_GATEWAY_API_KEYS": KEY, "CAPMESH_API_KEY": KEY}
    with capmesh_up(["--only", "tts"], tmp_path / "logs", env=up_env) as mesh:
        address = mesh["gateway (gRPC)"]
        cli = {**base, "CAPMESH_ADDRESS": address, "CAPMESH_API_KEY": KEY, "COLUMNS": "200"}

        def ok(*args: str) -> str:
            done = capmesh(*args, env=cli)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        assert "tts" in ok("status")
        audio = tmp_path / "hello.wav"
        ok("tts", "Hello there.", "-o", str(audio))
        assert audio.read_bytes()[:4] == b"RIFF"
        file_id = ok("files", "upload", str(audio)).strip()
        assert file_id in ok("files", "ls")
        downloaded = tmp_path / "again.wav"
        ok("files", "download", file_id, "-o", str(downloaded))
        assert downloaded.read_bytes() == audio.read_bytes()
        ok(
            "jobs",
            "submit",
            "/capmesh.tts.v1.TtsService/StreamSynthesize",
            "-d",
            json.dumps({"text": "A job."}),
            "--watch",
        )
        assert ok("jobs", "list", "--json").strip()
        # the flag, without the variable
        no_key = {k: v for k, v in cli.items() if k != "CAPMESH_API_KEY"}
        assert capmesh("--api-key", KEY, "status", env=no_key).returncode == 0
        refused = capmesh("status", env=no_key)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr + refused.stdout
        with httpx.Client(base_url=mesh["gateway (HTTP)"], timeout=60) as http:
            assert http.get("/v1/capabilities").status_code == 401
            assert http.get("/v1/capabilities", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        # `capmesh up` gave its services a mesh secret: a direct call, even with the client key, is refused
        with grpc.insecure_channel(mesh["tts"]) as channel:
            with pytest.raises(grpc.RpcError) as direct:
                tts_service_pb2_grpc.TtsServiceStub(channel).ListVoices(
                    tts_service_pb2.ListVoicesRequest(), metadata=(("authorization", f"Bearer {KEY}"),), timeout=30
                )
            assert direct.value.code() == grpc.StatusCode.UNAUTHENTICATED

"""Defects 4, 5, 6 and 8: the CLI as scripts and people use it, as real processes against a real
gateway and TTS service (stdout captured, no terminal)."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path

from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from tests.defects.support import ROOT, cli
from tests.gateway.backends import build_echo_service
from tests.jobs.support import eventually

SYNTHESIZE = "/capmesh.tts.v1.TtsService/StreamSynthesize"


def _wav(tmp_path: Path) -> Path:
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16_000)
        writer.writeframes(b"\0\0" * 1600)
    return path


def test_files_upload_prints_exactly_the_id_for_scripts(tts_mesh, tmp_path) -> None:
    source = _wav(tmp_path)
    uploaded = cli("files", "upload", str(source), "--address", tts_mesh.grpc_address)
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = uploaded.stdout.removesuffix("\n")
    assert file_id and file_id == file_id.strip() and "\n" not in file_id  # before: a leading newline
    back = tmp_path / "back.wav"
    downloaded = cli("files", "download", file_id, "-o", str(back), "--address", tts_mesh.grpc_address)
    assert downloaded.returncode == 0, downloaded.stderr
    assert back.read_bytes() == source.read_bytes()
    as_json = cli("files", "upload", str(source), "--json", "--address", tts_mesh.grpc_address)
    assert as_json.returncode == 0, as_json.stderr
    info = json.loads(as_json.stdout)
    assert info["fileId"] and int(info["sizeBytes"]) == source.stat().st_size


def test_unwritable_outputs_are_refused_before_the_work_with_one_line(tts_mesh, tmp_path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    file_id = cli("files", "upload", str(_wav(tmp_path)), "--address", tts_mesh.grpc_address).stdout.strip()
    for args in (
        ["tts", "hi", "-o", str(missing / "a.wav")],
        ["image", "a lighthouse", "-o", str(missing / "a.png")],
        ["video", str(_wav(tmp_path)), "waves", "-o", str(missing / "a.mp4")],
        ["files", "download", file_id, "-o", str(missing / "a.wav")],
        ["talk", str(_wav(tmp_path)), "--text", "hi", "-o", str(missing / "a.mp4")],
        ["tts", "hi", "-o", str(tmp_path)],  # a folder where the file should go
    ):
        done = cli(*args, "--address", tts_mesh.grpc_address)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "cannot write" in done.stderr and ("does not exist" in done.stderr or "folder" in done.stderr)


def test_jobs_list_takes_labels_and_cancel_of_a_finished_job_says_so(tts_mesh) -> None:
    address = ["--address", tts_mesh.grpc_address]
    submitted = cli("jobs", "submit", SYNTHESIZE, "-d", '{"text": "A job."}', "-l", "who=defect6", *address)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    other = cli("jobs", "submit", SYNTHESIZE, "-d", '{"text": "Another."}', "-l", "who=else", *address)
    assert other.returncode == 0, other.stderr
    assert cli("jobs", "watch", job_id, *address).returncode == 0  # it succeeds

    listed = cli("jobs", "list", "-l", "who=defect6", "--json", *address)  # before: "No such option: -l"
    assert listed.returncode == 0, listed.stderr
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert names == [f"operations/{job_id}"]

    cancelled = cli("jobs", "cancel", job_id, *address)
    assert cancelled.returncode == 1  # before: exit 0, "cancel requested"
    assert "already ended (SUCCEEDED)" in cancelled.stderr and "cancel requested" not in cancelled.stdout


def test_status_without_a_terminal_keeps_each_row_on_one_line(tts_mesh) -> None:
    done = cli("status", "--address", tts_mesh.grpc_address)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "tts-" in line]
    assert len(rows) == 1, done.stdout  # before: folded into 5-character columns over many lines
    view = json.loads(cli("status", "--json", "--address", tts_mesh.grpc_address).stdout)
    assert [c["capability"] for c in view["capabilities"]] == ["tts"]


async def test_status_drops_an_old_error_once_the_backend_is_available_again(tmp_path) -> None:
    gateway = await start_gateway(
        GatewaySettings(port=0, http_port=0, heartbeat_interval_s=0.2, lease_s=2.0, files_dir=str(tmp_path))
    )
    service, _ = build_echo_service("A", ServerSettings(gateway=gateway.grpc_address, grace_period_s=0))
    backend = await create_server(service)
    registry = gateway.gateway.registry

    def state() -> str:
        entries = list(registry.entries.values())
        return entries[0].state.name if entries else ""

    try:
        await eventually(lambda: state() == "AVAILABLE", what="the backend AVAILABLE")
        await backend.set_serving(False)
        await eventually(lambda: state() == "UNAVAILABLE", what="the backend UNAVAILABLE")
        down = await _status(gateway.grpc_address)
        assert "NOT_SERVING" in down  # while down, the reason is shown
        await backend.set_serving(True)
        await eventually(lambda: state() == "AVAILABLE", what="the backend AVAILABLE again")
        up = await _status(gateway.grpc_address)
        row = next(line for line in up.splitlines() if "echo-" in line)
        assert "AVAILABLE" in row and "NOT_SERVING" not in row, up  # before: the old error stayed
    finally:
        await backend.shutdown(grace_s=0)
        await gateway.stop(grace_s=0)


async def _status(address: str) -> str:
    """`capmesh status` as a real process (async: the gateway answering it runs in this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "capmesh.cli.main",
        "status",
        "--address",
        address,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode()

"""`capmesh jobs` and `capmesh files` against a real gateway process and a stepper backend."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from capmesh.cli.main import app
from tests.jobs.conftest import FAST_JOBS
from tests.jobs.support import SYNTHESIZE, start_gateway_process, start_stepper_process, write_backends


@pytest.fixture(scope="module")
def gateway_address(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    stepper, backend = start_stepper_process(step_s=0.01)
    settings = {k: v for k, v in FAST_JOBS.items() if k != "log_level"}
    gateway, address = start_gateway_process(
        port=0,
        files_dir=folder / "files",
        log_level="error",
        backends_file=write_backends(folder / "b.json", [backend], 2),
        **settings,
    )
    yield address
    gateway.kill()
    stepper.kill()


def run(*args: str, address: str) -> str:
    result = CliRunner().invoke(app, [*args, "--address", address])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_jobs_submit_watch_list_get_and_cancel(gateway_address):
    # The gateway may still be probing its backend: submit queues either way, watch waits it out.
    output = run(
        "jobs",
        "submit",
        SYNTHESIZE,
        "-d",
        '{"text": "steps:3"}',
        "--label",
        "characterId=char_001",
        "--watch",
        address=gateway_address,
    )
    job_id = output.split()[0]
    got = json.loads(run("jobs", "get", job_id, address=gateway_address))
    assert got["done"] and got["result"]["response"]["sentenceCount"] == 3
    listed = run("jobs", "list", "--json", "--filter", 'labels.characterId = "char_001"', address=gateway_address)
    assert [json.loads(line)["name"] for line in listed.splitlines()] == [f"operations/{job_id}"]
    slow = run("jobs", "submit", SYNTHESIZE, "-d", '{"text": "steps:5000"}', address=gateway_address).split()[0]
    run("jobs", "cancel", slow, address=gateway_address)
    result = CliRunner().invoke(app, ["jobs", "watch", slow, "--address", gateway_address])
    assert result.exit_code == 1 and "CANCELLED" in result.output


def test_files_upload_download_ls_rm(gateway_address, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(2_500_000))
    file_id = run("files", "upload", str(source), "--label", "k=v", address=gateway_address).strip()
    target = tmp_path / "out.bin"
    run("files", "download", file_id, "-o", str(target), address=gateway_address)
    assert target.read_bytes() == source.read_bytes()
    run("files", "download", file_id, "-o", str(target), "--offset", "1000", "--length", "10", address=gateway_address)
    assert target.read_bytes() == source.read_bytes()[1000:1010]
    assert file_id in run("files", "ls", address=gateway_address)
    run("files", "rm", file_id, address=gateway_address)
    assert file_id not in run("files", "ls", address=gateway_address)

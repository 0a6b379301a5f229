"""Defect 13, second half: a model that cannot load marks its service NOT_SERVING before users hit it.

Visible breakage (unreadable config, missing or truncated weights) stops `capmesh serve` at start,
naming the file. A checkpoint that only loading shows broken (weights of the wrong shape), served
lazily, turns the backend NOT_SERVING on its first load: the gateway routes to the healthy backend,
its registry says why, and a later successful load brings the backend back. Real processes: a
gateway, a tiny LLM backend and one whose checkpoint is broken; with them, defect 11's last part
(`capmesh chat` says when an answer comes from random weights) and the LLM's `queued` progress.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.client.llm import LlmClient, Message
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.llm.tiny import tiny_path
from capmesh.services.runtime.checkpoint_files import checkpoint_problem
from tests.defects.support import ROOT, available, cli, gateway_process, service_process, wait_until


def _copy_of_tiny(dest: Path) -> Path:
    """The tiny LLM checkpoint, copied without its random-weights mark."""
    shutil.copytree(tiny_path(), dest)
    (dest / ".complete").unlink()
    return dest


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


# -- the check at start, on files only -----------------------------------------------------------
def test_the_start_check_finds_visible_breakage_in_the_files(tmp_path: Path) -> None:
    good = _copy_of_tiny(tmp_path / "good")
    assert checkpoint_problem(good) == ""

    bad_json = _copy_of_tiny(tmp_path / "json")
    (bad_json / "config.json").write_text('{"model_type": "llama",')
    assert "config.json is not readable JSON" in checkpoint_problem(bad_json)

    no_weights = _copy_of_tiny(tmp_path / "weights")
    (no_weights / "model.safetensors").unlink()
    assert "has a config.json but no weights file" in checkpoint_problem(no_weights)

    sharded = _copy_of_tiny(tmp_path / "sharded")
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "names shards that are missing: model-00002-of-00002.safetensors" in checkpoint_problem(sharded)

    truncated = _copy_of_tiny(tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert f"{weights} is truncated" in checkpoint_problem(truncated)


def test_a_truncated_weights_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    checkpoint = _copy_of_tiny(tmp_path / "truncated")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = subprocess.run(
        [sys.executable, "-m", "capmesh.cli.main", "serve", "llm", "--port", "0", "--model", str(checkpoint)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CAPMESH_LLM_LOG_LEVEL": "warning"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening on" not in done.stdout and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("capmesh llm: ")]
    assert len(lines) == 1 and f"{weights} is truncated" in lines[0], done.stderr


# -- a load that fails -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mesh:
    gateway: str
    broken: Path  # the checkpoint of the broken backend: hidden_size doubled, weights of the old shape
    good_config: dict


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    broken = _copy_of_tiny(tmp_path_factory.mktemp("broken") / "llm")
    good_config = _config(broken)
    _write_config(broken, {**good_config, "hidden_size": 2 * good_config["hidden_size"]})
    gateway, address, _ = gateway_process(files_dir=tmp_path_factory.mktemp("files"))
    # Both backends start at once: most of a start is importing torch and transformers.
    with ThreadPoolExecutor(2) as pool:
        starts = [
            # The tiny checkpoint, lazily loaded; one sequence at a time, so that a second call waits.
            pool.submit(service_process, "llm", address, "--set", "max_batch_size=1"),
            pool.submit(service_process, "llm", address, "--model", str(broken)),
        ]
    backends = [start.result() for start in starts if start.exception() is None]
    try:
        assert len(backends) == 2, [start.exception() for start in starts]
        yield Mesh(address, broken, good_config)
    finally:
        for process in [*backends, gateway]:
            process.kill()


def _backends(address: str) -> list[pb.BackendStatus]:
    with grpc.insecure_channel(address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        answer = stub.GetCapability(pb.GetCapabilityRequest(capability="llm"), timeout=10)
    return list(answer.capability.backends)


def _broken_backend(mesh: Mesh) -> pb.BackendStatus:
    return next(b for b in _backends(mesh.gateway) if str(mesh.broken) in b.backend.models)


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="capmesh.llm.v1.LlmService")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def _ask(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        return LlmClient(channel).chat([Message("user", "hi")], max_tokens=2, timeout=120).model


def test_a_model_that_cannot_load_turns_its_backend_not_serving(mesh: Mesh) -> None:
    wait_until(lambda: available(mesh.gateway, "llm") == 2, what="both llm backends AVAILABLE")
    broken = _broken_backend(mesh).backend.address
    assert _health(broken) == health_pb2.HealthCheckResponse.SERVING  # the files look fine: it serves

    # Whichever backend the gateway picks, the caller gets an answer: a failed load is UNAVAILABLE
    # before any output, which the gateway retries on the other backend.
    answered = {_ask(mesh.gateway) for _ in range(3)}
    assert answered == {"tiny"}
    # A call made straight to the broken backend loads its model (if no routed call did).
    with pytest.raises(Exception, match="failed to load"):
        _ask(broken)

    assert _health(broken) == health_pb2.HealthCheckResponse.NOT_SERVING

    def says_why() -> str:
        backend = _broken_backend(mesh)
        down = backend.state == pb.BACKEND_STATE_UNAVAILABLE and "failed to load" in backend.last_error
        return backend.last_error if down else ""

    reason = wait_until(says_why, what="the broken backend UNAVAILABLE with the reason")
    assert str(mesh.broken) in reason and "mismatch" in reason, reason
    assert available(mesh.gateway, "llm") == 1
    assert {_ask(mesh.gateway) for _ in range(3)} == {"tiny"}  # routed to the healthy backend only

    # Mended, and loaded again (the operator's AdminService/LoadModels): the backend serves again.
    _write_config(mesh.broken, mesh.good_config)
    with grpc.insecure_channel(broken) as channel:
        admin_service_pb2_grpc.AdminServiceStub(channel).LoadModels(admin_service_pb2.LoadModelsRequest(), timeout=120)
    assert _health(broken) == health_pb2.HealthCheckResponse.SERVING
    wait_until(lambda: available(mesh.gateway, "llm") == 2, what="the mended backend AVAILABLE again")


def test_chat_says_when_the_answer_comes_from_random_weights(mesh: Mesh) -> None:
    """Defect 11: `capmesh chat` flags answers of a model with random weights, on stderr (stdout
    stays the answer alone, for scripts), and only those; so does `capmesh status`."""
    tiny = next(b for b in _backends(mesh.gateway) if "tiny" in b.backend.models).backend.address
    noise = cli("chat", "-m", "hi", "-n", "2", "--address", tiny)
    assert noise.returncode == 0, noise.stderr
    assert "random weights: the output is noise" in noise.stderr
    assert "random weights" not in noise.stdout and noise.stdout.endswith("\n")

    _write_config(mesh.broken, mesh.good_config)  # mended (as the test above leaves it): real weights
    real = cli("chat", "-m", "hi", "-n", "2", "--address", _broken_backend(mesh).backend.address)
    assert real.returncode == 0, real.stderr
    assert "random weights" not in real.stderr + real.stdout

    # `capmesh status` flags the backend with random weights, and only it.
    table = cli("status", "--address", mesh.gateway)
    flagged = [line for line in table.stdout.splitlines() if "random weights" in line]
    assert len(flagged) == 1 and tiny.rsplit(":", 1)[1] in flagged[0], table.stdout


def test_an_llm_stream_waiting_for_a_batch_slot_reports_queued(mesh: Mesh) -> None:
    """Seed fidelity: the LLM stream reports `queued` with its position (the requests ahead) while it
    waits for a batch slot, on a real `capmesh serve llm` process (max_batch_size=1)."""
    tiny = next(b for b in _backends(mesh.gateway) if "tiny" in b.backend.models).backend.address
    with grpc.insecure_channel(tiny) as channel:
        llm = LlmClient(channel)
        # A long answer (its end-of-text token banned) holds the only slot until it is cancelled.
        holder = llm.stream([Message("user", "hi")], max_tokens=1500, logit_bias={2: -100.0}, timeout=120)
        assert next(holder).WhichOneof("event") == "chunk"
        waiter = llm.stream([Message("user", "hi")], max_tokens=2, timeout=120)
        first = next(waiter)
        holder.cancel()
        rest = list(waiter)
    assert first.WhichOneof("event") == "progress", first
    assert first.progress.stage == "queued" and first.progress.queue_position == 0, first.progress  # none ahead
    assert rest[-1].WhichOneof("event") == "result"

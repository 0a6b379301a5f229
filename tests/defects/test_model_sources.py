"""Defects 13 and 14: a model that can never load stops `capmesh serve` at start with one clear line
naming it (before: a path taken for a hub id and SERVING until the first call; with eager_load a
257-line traceback ending in "Event loop is closed"). Real `capmesh serve` processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capmesh.services.llm.tiny import tiny_path
from tests.defects.support import ROOT


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capmesh.cli.main", "serve", "llm", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CAPMESH_LLM_LOG_LEVEL": "warning"},
    )


def _complaint(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening on" not in done.stdout  # it never said it serves
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr
    assert "was never awaited" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("capmesh llm: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("eager", ["false", "true"])
def test_a_path_that_does_not_exist_is_an_error_naming_it(tmp_path: Path, eager: str) -> None:
    missing = tmp_path / "nonexistent"
    line = _complaint(_serve("--model", str(missing), "--set", f"eager_load={eager}"))
    assert str(missing) in line and "does not exist" in line and "Repo id" not in line


def test_a_folder_that_is_no_checkpoint_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    line = _complaint(_serve("--model", str(tmp_path)))
    assert "not a checkpoint folder" in line and str(tmp_path) in line


def test_a_broken_checkpoint_with_eager_load_stops_with_one_clear_line(tmp_path: Path) -> None:
    # Files that look whole (the check at start passes) but no tokenizer: only the load can tell.
    checkpoint = shutil.copytree(tiny_path(), tmp_path / "llm")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (checkpoint / name).unlink()
    done = _serve("--model", str(checkpoint), "--set", "eager_load=true")
    line = _complaint(done)
    assert "failed to load" in line and str(checkpoint) in line
    assert len(done.stderr.splitlines()) < 20, done.stderr


def test_a_checkpoint_without_weights_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    line = _complaint(_serve("--model", str(tmp_path)))
    assert f"{tmp_path} has a config.json but no weights file" in line

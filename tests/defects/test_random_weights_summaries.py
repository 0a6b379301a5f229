"""Defect 11, CLI summaries: a command's summary says when its output comes from random weights. A
real `capmesh serve tts` process on the tiny VITS checkpoint, and `capmesh tts` against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.defects.support import ROOT, cli


@pytest.fixture(scope="module")
def vits() -> Iterator[str]:
    """The address of a TTS service serving the tiny (random weights) VITS checkpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "capmesh.cli.main", "serve", "tts", "--port", "0", "--set", "engine=transformers"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the service says it serves (or exits)
        assert "listening on" in line, line
        yield line.split("listening on", 1)[1].strip()
    finally:
        process.kill()
        process.wait(30)


def test_tts_summary_flags_random_weights(vits: str, tmp_path: Path) -> None:
    target = tmp_path / "a.wav"
    done = cli("tts", "hello there", "-o", str(target), "--address", vits)
    assert done.returncode == 0, done.stderr
    assert target.stat().st_size > 44
    assert "(random weights: the output is noise, for tests and demos)" in done.stdout

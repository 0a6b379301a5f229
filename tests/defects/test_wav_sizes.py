"""Defect 1: WAV from `/v1/audio/speech` and from the README's Python snippet carries its true sizes,
so Python's `wave` reads the real frame count (before: 0xFFFFFFFF, 2147483647 frames)."""

from __future__ import annotations

import re
import subprocess
import sys
import wave
from pathlib import Path

import httpx

from tests.defects.support import ROOT


def _frames(path: Path) -> int:
    with wave.open(str(path)) as reader:
        frames = reader.getnframes()
        assert reader.getsampwidth() == 2 and reader.getnchannels() == 1
    assert path.stat().st_size == 44 + 2 * frames  # the header's sizes are the file's
    return frames


def test_openai_speech_wav_has_true_sizes(tts_mesh, tmp_path) -> None:
    answer = httpx.post(
        f"{tts_mesh.http_url}/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello from capmesh.", "voice": "alloy", "response_format": "wav"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("audio/wav")
    path = tmp_path / "hello.wav"
    path.write_bytes(answer.content)
    assert 0 < _frames(path) < 10 * 48_000

    refused = httpx.post(
        f"{tts_mesh.http_url}/v1/audio/speech",
        json={"input": "x", "voice": "no-such-voice", "response_format": "wav"},
        timeout=60,
    )
    assert refused.status_code == 400 and refused.json()["error"]["message"]


def test_the_readmes_python_snippet_writes_true_sizes(tts_mesh, tmp_path) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "hello.wav" in block)
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("localhost:50051", tts_mesh.grpc_address))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 0 < _frames(tmp_path / "hello.wav") < 10 * 48_000

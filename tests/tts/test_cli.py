"""`capmesh tts` against an in-process TTS server (the CLI runs in a worker thread)."""

from __future__ import annotations

import asyncio
import json
import wave

import pytest
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.services.runtime.server import create_server
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.main import build_service

from .conftest import decode_with_pyav


@pytest.fixture
async def address():
    running = await create_server(build_service(TtsSettings()))
    yield f"127.0.0.1:{running.port}"
    await running.shutdown(grace_s=0)


async def capmesh(*args: str):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_tts_writes_a_standard_wav(address, tmp_path):
    out = tmp_path / "out.wav"
    result = await capmesh("tts", "Hello there. This is the command line.", "-o", str(out), "--address", address)
    assert result.exit_code == 0, result.output
    with wave.open(str(out)) as reader:
        assert reader.getframerate() == 22050
        assert reader.getnframes() == (out.stat().st_size - 44) // 2, "exact sizes, not the streaming header"
    assert "2 sentences" in result.output and "voice en-us" in result.output


async def test_tts_mp3_with_voice_and_speed(address, tmp_path):
    out = tmp_path / "speech.mp3"
    result = await capmesh(
        "tts", "Faster speech in mp3.", "--voice", "en-gb", "--speed", "1.2", "-o", str(out), "--address", address
    )
    assert result.exit_code == 0, result.output
    assert decode_with_pyav(out.read_bytes()).duration_s > 0.3
    assert "of mp3" in result.output


async def test_tts_lists_voices(address):
    result = await capmesh("tts", "--voices", "--language", "fr", "--address", address)
    assert result.exit_code == 0, result.output
    assert "fr-fr" in result.output and "en-us" not in result.output


async def test_tts_scene(address, tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(
        json.dumps(
            {
                "segments": [
                    {"speaker": "Ann", "text": "Hello Bob.", "voice": "en-us", "pause_after_seconds": 0.3},
                    {"speaker": "Bob", "text": "Hi Ann.", "voice": "en-gb+Alicia"},
                ]
            }
        )
    )
    out = tmp_path / "scene.wav"
    result = await capmesh("tts", "--scene", str(scene), "-o", str(out), "--address", address)
    assert result.exit_code == 0, result.output
    assert "Ann" in result.output and "Bob" in result.output
    with wave.open(str(out)) as reader:
        assert reader.getnframes() > 0


async def test_tts_reports_field_violations(address, tmp_path):
    result = await capmesh("tts", "Hi.", "--voice", "nobody", "-o", str(tmp_path / "x.wav"), "--address", address)
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "voice" in result.output
    assert not (tmp_path / "x.wav").exists()


async def test_tts_rejects_a_bad_scene_file(tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps([{"speaker": "Ann", "txt": "typo"}]))
    result = await capmesh("tts", "--scene", str(scene), "--address", "127.0.0.1:1")
    assert result.exit_code == 2 and 'needs "text"' in result.output

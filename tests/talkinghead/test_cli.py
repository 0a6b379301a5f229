"""`capmesh talk` against in-process servers (the CLI runs in a thread, the servers in the test's loop)."""

from __future__ import annotations

import asyncio

import pytest
import typer
from typer.testing import CliRunner

from capmesh.cli import talk
from capmesh.services.runtime.server import create_server
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.main import build_service
from tests.support.video import probe_mp4


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    talk.register(app)
    app.command("noop", hidden=True)(lambda: None)  # a second command keeps `talk` a named sub-command
    return app


@pytest.fixture
async def talkinghead_address():
    running = await create_server(build_service(TalkingheadSettings(default_size=128, default_fps=10)))
    yield f"127.0.0.1:{running.port}"
    await running.shutdown(grace_s=0)


async def invoke(app, args):
    return await asyncio.to_thread(CliRunner().invoke, app, args)


async def test_talk_with_an_audio_file(cli, talkinghead_address, tmp_path, portrait_png, speech_wav):
    face, audio, out = tmp_path / "face.png", tmp_path / "speech.wav", tmp_path / "out.mp4"
    face.write_bytes(portrait_png)
    audio.write_bytes(speech_wav)
    result = await invoke(
        cli, ["talk", str(face), str(audio), "-o", str(out), "--address", talkinghead_address, "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    probe, _ = probe_mp4(out.read_bytes(), decode_frames=False)
    assert (probe.width, probe.height, probe.audio_codec) == (128, 128, "aac")
    assert f"{probe.frame_count} frames" in result.output and "seed 3" in result.output


async def test_talk_reports_field_violations(cli, talkinghead_address, tmp_path, portrait_png, speech_wav):
    face, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    face.write_bytes(portrait_png)
    audio.write_bytes(speech_wav)
    result = await invoke(cli, ["talk", str(face), str(audio), "--address", talkinghead_address, "--fps", "999"])
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "fps" in result.output


async def test_talk_needs_audio_or_text_but_not_both(cli, tmp_path, portrait_png, speech_wav):
    face, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    face.write_bytes(portrait_png)
    audio.write_bytes(speech_wav)
    assert (await invoke(cli, ["talk", str(face)])).exit_code == 2
    assert (await invoke(cli, ["talk", str(face), str(audio), "--text", "hi"])).exit_code == 2


async def test_talk_with_text_calls_tts_first(cli, talkinghead_address, tmp_path, portrait_png):
    from capmesh.services.runtime.settings import load_settings
    from capmesh.services.tts import main as tts

    running = await create_server(
        tts.build_service(load_settings(tts.Settings, tts.ENV_PREFIX, {"engine": "espeak"}, environ={}))
    )
    try:
        face, out = tmp_path / "face.png", tmp_path / "out.mp4"
        face.write_bytes(portrait_png)
        result = await invoke(
            cli,
            [
                "talk",
                str(face),
                "--text",
                "Hello there",
                "-o",
                str(out),
                "--tts-address",
                f"127.0.0.1:{running.port}",
                "--talkinghead-address",
                talkinghead_address,
            ],
        )
    finally:
        await running.shutdown(grace_s=0)
    assert result.exit_code == 0, result.output
    probe, _ = probe_mp4(out.read_bytes(), decode_frames=False)
    assert probe.frame_count >= 5 and probe.audio_seconds > 0.5

"""`capmesh video` against an in-process VideoGen server (the CLI runs in a thread, as a user's process would)."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.services.runtime.server import create_server
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.main import build_service
from tests.support.video import probe_mp4
from tests.videogen.conftest import png_bytes


async def test_video_command_writes_the_mp4_and_reports_it(tmp_path, tiny_wan):
    running = await create_server(build_service(VideogenSettings()))
    first = tmp_path / "first.png"
    first.write_bytes(png_bytes(64, 32))
    out = tmp_path / "out.mp4"
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            [
                "video",
                str(first),
                "a cat walks",
                "-o",
                str(out),
                "--frames",
                "9",
                "--fps",
                "10",
                "--steps",
                "2",
                "--seed",
                "4",
                "--size",
                "64x32",
                "--address",
                f"127.0.0.1:{running.port}",
            ],
        )
        invalid = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            [
                "video",
                str(first),
                "--frames",
                "8",
                "--address",
                f"127.0.0.1:{running.port}",
            ],
        )
    finally:
        await running.shutdown(grace_s=0)

    assert result.exit_code == 0, result.output
    assert "9 frames at 10 fps, 64x32" in result.output and "seed 4" in result.output
    probe, _ = probe_mp4(out.read_bytes(), decode_frames=False)
    assert (probe.frame_count, probe.width, probe.height, probe.fps) == (9, 64, 32, 10.0)
    assert invalid.exit_code == 1 and "num_frames" in invalid.output and "4k+1" in invalid.output

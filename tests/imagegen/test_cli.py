"""`capmesh image` against an in-process ImageGen server (the CLI runs in a thread)."""

from __future__ import annotations

import asyncio

from PIL import Image
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.main import build_service
from capmesh.services.runtime.server import create_server


async def test_image_command_writes_numbered_pngs(tmp_path, tiny_sd):
    running = await create_server(build_service(ImagegenSettings()))
    out = tmp_path / "fox.png"
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            [
                "image",
                "a red fox",
                "-o",
                str(out),
                "-n",
                "2",
                "--size",
                "48x32",
                "--steps",
                "2",
                "--seed",
                "3",
                "--address",
                f"127.0.0.1:{running.port}",
            ],
        )
    finally:
        await running.shutdown(grace_s=0)

    assert result.exit_code == 0, result.output
    assert "2 image(s), 2 steps, seed 3" in result.output
    for index in (0, 1):
        assert Image.open(tmp_path / f"fox-{index}.png").size == (48, 32)


def test_a_bad_size_is_refused_before_any_call():
    result = CliRunner().invoke(app, ["image", "a fox", "--size", "big", "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output

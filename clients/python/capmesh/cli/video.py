"""`capmesh video`: animate an image into a short mp4, with a live progress bar.

capmesh video first.png "the cat walks away" -o out.mp4
capmesh video first.png "waves roll in" --frames 33 --fps 16 --steps 30 --seed 7 --size 832x480
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from capmesh.cli.options import DIFFUSION, address_option, parse_size, with_options
from capmesh.cli.progress import RANDOM_WEIGHTS_NOTE, check_output, streamed_call


def register(app: typer.Typer) -> None:
    app.command("video")(video)


@with_options(*DIFFUSION)
def video(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="The first frame: PNG, JPEG or WebP."),
    prompt: str = typer.Argument("", help="What should happen in the video."),
    output: Path = typer.Option(Path("out.mp4"), "--output", "-o", help="Where to write the mp4."),
    frames: int = typer.Option(0, "--frames", help="Number of frames (Wan: 4k+1); 0 takes the model default."),
    fps: float = typer.Option(0.0, "--fps", help="Frames per second; 0 takes the model default."),
    seed: int | None = typer.Option(None, "--seed", help="Seed: the same seed gives the same video."),
    size: str = typer.Option("", "--size", help="WIDTHxHEIGHT; empty: from the image's aspect and the model."),
    address: str = address_option("VideoGen"),
    **options: Any,
) -> None:
    """Image to video: streams denoising progress, then writes the mp4."""
    from capmesh.client.videogen import VideoGenClient

    width, height = parse_size(size)
    check_output("video", output)
    with streamed_call("video", address) as (progress, channel):
        generated = VideoGenClient(channel).generate(
            image.read_bytes(),
            prompt,
            width=width,
            height=height,
            num_frames=frames,
            fps=fps,
            seed=seed,
            on_progress=progress.update,
            **options,
        )
    output.write_bytes(generated.mp4)
    r = generated.result
    typer.echo(
        f"{output}: {r.num_frames} frames at {r.fps:g} fps, {r.width}x{r.height}, {r.duration_seconds:.2f} s, "
        f"{r.steps} steps, seed {r.seed}, model {r.model}" + (RANDOM_WEIGHTS_NOTE if r.random_weights else "")
    )

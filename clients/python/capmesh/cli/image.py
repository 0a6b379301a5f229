"""`capmesh image`: make images from a prompt, with a live progress bar.

    capmesh image "a lighthouse at dawn" -o out.png
    capmesh image "a lighthouse at dawn" -n 4 --size 768x512 --steps 30 --seed 7 -o lighthouse.png

With -n above 1 the files are numbered: lighthouse-0.png, lighthouse-1.png, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from capmesh.cli.options import DIFFUSION, address_option, parse_size, with_options
from capmesh.cli.progress import RANDOM_WEIGHTS_NOTE, check_output, streamed_call


def register(app: typer.Typer) -> None:
    app.command("image")(image)


@with_options(*DIFFUSION)
def image(
    prompt: str = typer.Argument(..., help="What the images should show."),
    output: Path = typer.Option(Path("out.png"), "--output", "-o", help="Where to write the PNG."),
    num_images: int = typer.Option(1, "-n", "--num-images", help="How many images."),
    size: str = typer.Option("", "--size", help="WIDTHxHEIGHT; empty takes the model default."),
    seed: int | None = typer.Option(None, "--seed", help="Seed: image i uses seed + i."),
    address: str = address_option("ImageGen"),
    **options: Any,
) -> None:
    """Text to image: streams denoising progress, then writes the PNG files."""
    from capmesh.client.imagegen import ImageGenClient

    width, height = parse_size(size)
    check_output("image", output)
    with streamed_call("image", address) as (progress, channel):
        generated = ImageGenClient(channel).generate(
            prompt,
            width=width,
            height=height,
            seed=seed,
            num_images=num_images,
            on_progress=progress.update,
            **options,
        )
    r = generated.result
    for info, png in zip(r.images, generated.pngs):
        path = output if len(generated.pngs) == 1 else output.with_name(f"{output.stem}-{info.index}{output.suffix}")
        path.write_bytes(png)
        typer.echo(f"{path}: {info.width}x{info.height}, {info.artifact.size_bytes} bytes")
    typer.echo(
        f"{len(generated.pngs)} image(s), {r.steps} steps, seed {r.seed}, model {r.model}"
        + (RANDOM_WEIGHTS_NOTE if r.random_weights else "")
    )

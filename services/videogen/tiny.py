"""Tiny random image-to-video checkpoints: Wan 2.1-style image-to-video (the default) and Stable Video Diffusion.

The component sizes in `tiny.json` follow diffusers' own fast tests (tests/pipelines/wan/
test_wan_image_to_video.py, tests/pipelines/stable_video_diffusion): every component is the real class
with a tiny config, so the engine's loading code (`model_index.json` -> pipeline class ->
`from_pretrained`) runs unchanged. The tokenizer is written locally. A small
`capmesh_generation_defaults.json` makes requests that leave size, frames and steps at 0 cheap on this
checkpoint. Stable Video Diffusion's image encoder is 224 pixels wide because the pipeline resizes
PIL inputs to 224 x 224 for it, whatever its config says.
"""

from __future__ import annotations

from pathlib import Path

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.runtime.tiny import build_pipeline, ensure_tiny, read_recipe

TINY_NAME = "videogen"  # the default tiny checkpoint: Wan image-to-video
SVD_NAME = "videogen-svd"


def build_tiny(dest: Path) -> None:
    """Writes the default tiny checkpoint (Wan image-to-video) into `dest`."""
    from capmesh.services.diffusion.tokenizers import tiny_t5_tokenizer

    recipe = read_recipe(Path(__file__).parent, TINY_NAME)
    tokenizer = tiny_t5_tokenizer()
    build_pipeline(recipe, dest, {"text_encoder": {"vocab_size": len(tokenizer)}}, tokenizer=tokenizer)
    GenerationDefaults(**recipe["defaults"]).save(dest)


def build_tiny_svd(dest: Path) -> None:
    """A tiny Stable Video Diffusion checkpoint, so that the second supported family is loaded for real too."""
    recipe = read_recipe(Path(__file__).parent, SVD_NAME)
    build_pipeline(recipe, dest)
    GenerationDefaults(**recipe["defaults"]).save(dest)


def tiny_path() -> Path:
    return ensure_tiny(TINY_NAME, build_tiny)


def tiny_svd_path() -> Path:
    return ensure_tiny(SVD_NAME, build_tiny_svd)

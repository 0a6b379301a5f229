"""Tiny random Stable Diffusion text-to-image checkpoint, after diffusers' own fast-test components.

UNet, VAE and CLIP text encoder are the real classes with the tiny configs of `tiny.json`, the CLIP
tokenizer's vocabulary and merges are written locally, and the pipeline is saved with
`save_pretrained`, so `AutoPipelineForText2Image.from_pretrained` loads it like any Stable Diffusion
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.runtime.tiny import build_pipeline, ensure_tiny, read_recipe

TINY_NAME = "imagegen"  # tiny Stable Diffusion


def build_tiny(dest: Path) -> None:
    from capmesh.services.diffusion.tokenizers import tiny_clip_tokenizer

    recipe = read_recipe(Path(__file__).parent, TINY_NAME)
    tokenizer = tiny_clip_tokenizer()
    build_pipeline(recipe, dest, {"text_encoder": {"vocab_size": len(tokenizer)}}, tokenizer=tokenizer)
    GenerationDefaults(**recipe["defaults"]).save(dest)


def tiny_path() -> Path:
    return ensure_tiny(TINY_NAME, build_tiny)

"""Which text-to-image checkpoints ImageGen runs, and which sizes they accept, from config files only.

Supported: every family `AutoPipelineForText2Image` maps (Stable Diffusion, SDXL, SD3, Flux, ...),
whether the checkpoint's `model_index.json` names its text-to-image, image-to-image or inpainting class.

Size rule: multiples of the VAE's spatial scale, times 2 for transformer denoisers (SD3 and PixArt
patchify 2x2 latents, Flux and Qwen-Image pack them 2x2), and at least multiples of 8 (the Stable
Diffusion pipelines check for 8 whatever their VAE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from capmesh.services.diffusion.checkpoints import has_component, read_component_config, read_model_index


@dataclass(frozen=True)
class ImageGeometry:
    size_multiple: int
    size_rule: str


@cache
def text_to_image_class_names() -> frozenset[str]:
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_INPAINT_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    names = set()
    for family, pipeline_class in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items():
        names.add(pipeline_class.__name__)
        for sibling in (AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, AUTO_INPAINT_PIPELINES_MAPPING):
            if family in sibling:
                names.add(sibling[family].__name__)
    return frozenset(names)


def image_geometry(source: str) -> ImageGeometry:
    index = read_model_index(source)
    vae = read_component_config(source, "vae") if has_component(index, "vae") else {}
    levels = vae.get("block_out_channels")
    vae_scale = 2 ** (len(levels) - 1) if levels else int(vae.get("scale_factor_spatial") or 8)
    if has_component(index, "transformer"):
        patch = read_component_config(source, "transformer").get("patch_size") or 1
        patch = patch[-1] if isinstance(patch, (list, tuple)) else int(patch)
        latent_factor = max(2, patch)
        rule = f"VAE scale factor {vae_scale} x {latent_factor} latent patch"
    else:
        latent_factor = 1
        rule = f"VAE scale factor {vae_scale}"
    multiple = math.lcm(8, vae_scale * latent_factor)
    if multiple != vae_scale * latent_factor:
        rule += ", and the pipeline's multiple of 8"
    return ImageGeometry(multiple, rule)

"""ImageGen request validation: every bad field at once, each violation stating the rule it breaks."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.diffusion.validation import MAX_SEED, check_guidance, check_prompts, check_range, check_size
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.imagegen.geometry import ImageGeometry
from capmesh.services.runtime.errors import Violations


@dataclass(frozen=True)
class ImageJob:
    """A validated request; None fields are left to the pipeline's own defaults."""

    prompt: str
    negative_prompt: str
    width: int | None
    height: int | None
    steps: int | None
    guidance_scale: float | None
    seed: int
    num_images: int


def validate_request(
    request: ImageRequest, settings: ImagegenSettings, geometry: ImageGeometry | None, defaults: GenerationDefaults
) -> ImageJob:
    """Checks the request; `geometry` None (remote engines) skips the model's size-multiple rule."""
    v = Violations()
    v.check(bool(request.prompt.strip()), "prompt", "must not be empty")
    check_prompts(v, request, settings.max_prompt_chars)
    check_size(
        v,
        request,
        settings.max_width,
        settings.max_height,
        geometry.size_multiple if geometry else 1,
        geometry.size_rule if geometry else None,
    )
    check_range(v, "steps", request.steps, 1, settings.max_steps)
    check_range(v, "num_images", request.num_images, 1, settings.max_images)
    check_guidance(v, request)
    check_range(v, "seed", request.seed, 0, MAX_SEED - settings.max_images)
    v.raise_if_any()
    return ImageJob(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width or defaults.width or None,
        height=request.height or defaults.height or None,
        steps=request.steps or defaults.steps or None,
        guidance_scale=(
            request.guidance_scale if request.guidance_scale is not None else defaults.guidance_scale or None
        ),
        seed=secrets.randbelow(2**31) if request.seed is None else request.seed,
        num_images=request.num_images,
    )

"""ImageGen request validation: every bad field at once, each violation stating the rule it breaks."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.imagegen.geometry import ImageGeometry
from capmesh.services.runtime.errors import Violations

MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0


@dataclass(frozen=True)
class ImageLimits:
    max_width: int
    max_height: int
    max_steps: int
    max_images: int
    max_prompt_chars: int

    @classmethod
    def from_settings(cls, settings: ImagegenSettings) -> "ImageLimits":
        return cls(settings.max_width, settings.max_height, settings.max_steps, settings.max_images,
                   settings.max_prompt_chars)


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


def validate_request(request: ImageRequest, limits: ImageLimits, geometry: ImageGeometry | None,
                     defaults: GenerationDefaults) -> ImageJob:
    """Checks the request; `geometry` None (remote engines) skips the model's size-multiple rule."""
    v = Violations()
    v.check(bool(request.prompt.strip()), "prompt", "must not be empty")
    for field_name in ("prompt", "negative_prompt"):
        text = getattr(request, field_name)
        v.check(len(text) <= limits.max_prompt_chars, field_name,
                f"must be at most {limits.max_prompt_chars} characters; got {len(text)}")
    multiple = geometry.size_multiple if geometry else 1
    for field_name, limit in (("width", limits.max_width), ("height", limits.max_height)):
        value = getattr(request, field_name)
        if value is None:
            continue
        if value <= 0 or value > limit:
            v.add(field_name, f"must be between {multiple} and {limit}; got {value}")
        elif geometry and value % multiple:
            v.add(field_name, f"must be a multiple of {multiple} for this model ({geometry.size_rule}); got {value}")
    _check_range(v, "steps", request.steps, 1, limits.max_steps)
    _check_range(v, "num_images", request.num_images, 1, limits.max_images)
    if request.guidance_scale is not None:
        g = request.guidance_scale
        v.check(math.isfinite(g) and 0.0 <= g <= MAX_GUIDANCE, "guidance_scale",
                f"must be between 0 and {MAX_GUIDANCE:g}; got {g}")
    _check_range(v, "seed", request.seed, 0, MAX_SEED - limits.max_images)
    v.raise_if_any()
    return ImageJob(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width or defaults.width or None,
        height=request.height or defaults.height or None,
        steps=request.steps or defaults.steps or None,
        guidance_scale=(request.guidance_scale if request.guidance_scale is not None
                        else defaults.guidance_scale or None),
        seed=secrets.randbelow(2**31) if request.seed is None else request.seed,
        num_images=request.num_images,
    )


def _check_range(v: Violations, field_name: str, value: int | None, low: int, high: int) -> None:
    if value is not None:
        v.check(low <= value <= high, field_name, f"must be between {low} and {high}; got {value}")

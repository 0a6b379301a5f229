"""VideoGen request validation: every bad field at once, each violation stating the rule it breaks.

Limits come from settings; the model's own rules (frame counts, size multiples) come from its
geometry, read from the checkpoint's config files, so invalid requests are refused before any
weight is loaded. Fields left unset are filled from the defaults (settings, then checkpoint, then
the pipeline family).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.diffusion.media import UndecodableImage, complete_size, decode_image, fit_to_area
from capmesh.services.runtime.errors import Violations
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import VideoRequest
from capmesh.services.videogen.families import VideoGeometry, VideoJob

MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0


@dataclass(frozen=True)
class VideoLimits:
    max_width: int
    max_height: int
    max_frames: int
    max_steps: int
    max_fps: int
    max_prompt_chars: int
    max_input_pixels: int

    @classmethod
    def from_settings(cls, settings: VideogenSettings) -> "VideoLimits":
        return cls(settings.max_width, settings.max_height, settings.max_frames, settings.max_steps,
                   settings.max_fps, settings.max_prompt_chars, settings.max_input_pixels)


def validate_request(request: VideoRequest, limits: VideoLimits, geometry: VideoGeometry,
                     defaults: GenerationDefaults) -> VideoJob:
    """Checks the request against the limits and the model's geometry; returns the job to run."""
    v = Violations()
    image = None
    try:
        image = decode_image(request.image, max_pixels=limits.max_input_pixels)
    except UndecodableImage as exc:
        v.add("image", f"the input image {exc}")
    for field_name in ("prompt", "negative_prompt"):
        text = getattr(request, field_name)
        v.check(len(text) <= limits.max_prompt_chars, field_name,
                f"must be at most {limits.max_prompt_chars} characters; got {len(text)}")
    multiple = geometry.size_multiple
    for field_name, limit in (("width", limits.max_width), ("height", limits.max_height)):
        value = getattr(request, field_name)
        if value is None:
            continue
        if value <= 0 or value > limit:
            v.add(field_name, f"must be between {multiple} and {limit}; got {value}")
        elif value % multiple:
            v.add(field_name, f"must be a multiple of {multiple} for this model ({geometry.size_rule}); got {value}")
    if request.num_frames is not None:
        frames = request.num_frames
        if frames <= 0 or frames > limits.max_frames:
            v.add("num_frames", f"must be between 1 and {limits.max_frames}; got {frames}")
        elif not geometry.frames_ok(frames):
            v.add("num_frames", f"must be {geometry.frame_rule} for this model; got {frames}")
    if request.fps is not None:
        v.check(math.isfinite(request.fps) and 0 < request.fps <= limits.max_fps, "fps",
                f"must be greater than 0 and at most {limits.max_fps}; got {request.fps:g}")
    _check_range(v, "steps", request.steps, 1, limits.max_steps)
    if request.guidance_scale is not None:
        g = request.guidance_scale
        v.check(math.isfinite(g) and 0.0 <= g <= MAX_GUIDANCE, "guidance_scale",
                f"must be between 0 and {MAX_GUIDANCE:g}; got {g}")
    _check_range(v, "seed", request.seed, 0, MAX_SEED)
    v.raise_if_any()
    assert image is not None
    return _job(request, image, geometry, defaults)


def _check_range(v: Violations, field_name: str, value: int | None, low: int, high: int) -> None:
    if value is not None:
        v.check(low <= value <= high, field_name, f"must be between {low} and {high}; got {value}")


def _job(request: VideoRequest, image, geometry: VideoGeometry, defaults: GenerationDefaults) -> VideoJob:
    width, height = request.width or 0, request.height or 0
    multiple = geometry.size_multiple
    if not width and not height:
        width, height = fit_to_area(image.width, image.height, defaults.width * defaults.height, multiple)
    else:
        width, height = complete_size(width, height, image.width, image.height, multiple)
    return VideoJob(
        image=image,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=width,
        height=height,
        num_frames=request.num_frames or defaults.num_frames,
        fps=request.fps or defaults.fps,
        steps=request.steps or defaults.steps,
        guidance_scale=defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale,
        seed=secrets.randbelow(2**31) if request.seed is None else request.seed,
    )

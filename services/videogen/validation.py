"""VideoGen request validation: every bad field at once, each violation stating the rule it breaks.

Limits come from settings; the model's own rules (frame counts, size multiples) come from its
geometry, read from the checkpoint's config files, so invalid requests are refused before any
weight is loaded. Fields left unset are filled from the defaults (settings, then checkpoint, then
the pipeline family).
"""

from __future__ import annotations

import math
import secrets

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.diffusion.media import UndecodableImage, complete_size, decode_image, fit_to_area
from capmesh.services.diffusion.validation import MAX_SEED, check_guidance, check_prompts, check_range, check_size
from capmesh.services.runtime.errors import Violations
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import VideoRequest
from capmesh.services.videogen.families import VideoGeometry, VideoJob


def validate_request(
    request: VideoRequest, settings: VideogenSettings, geometry: VideoGeometry, defaults: GenerationDefaults
) -> VideoJob:
    """Checks the request against the settings' limits and the model's geometry; returns the job to run."""
    v = Violations()
    image = None
    try:
        image = decode_image(request.image, max_pixels=settings.max_input_pixels)
    except UndecodableImage as exc:
        v.add("image", f"the input image {exc}")
    check_prompts(v, request, settings.max_prompt_chars)
    check_size(v, request, settings.max_width, settings.max_height, geometry.size_multiple, geometry.size_rule)
    if request.num_frames is not None:
        frames = request.num_frames
        if frames <= 0 or frames > settings.max_frames:
            v.add("num_frames", f"must be between 1 and {settings.max_frames}; got {frames}")
        elif not geometry.frames_ok(frames):
            v.add("num_frames", f"must be {geometry.frame_rule} for this model; got {frames}")
    if request.fps is not None:
        v.check(
            math.isfinite(request.fps) and 0 < request.fps <= settings.max_fps,
            "fps",
            f"must be greater than 0 and at most {settings.max_fps}; got {request.fps:g}",
        )
    check_range(v, "steps", request.steps, 1, settings.max_steps)
    check_guidance(v, request)
    check_range(v, "seed", request.seed, 0, MAX_SEED)
    v.raise_if_any()
    assert image is not None
    return _job(request, image, geometry, defaults)


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

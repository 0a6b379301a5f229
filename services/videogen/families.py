"""The image-to-video pipeline families VideoGen runs, keyed by the class in `model_index.json`.

A family knows, from the checkpoint's config files alone, which frame counts and sizes the model
accepts (its geometry) and its usual defaults, and how to turn a resolved request into the pipeline's
call arguments. Adding a family means adding one class here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from capmesh.services.diffusion.checkpoints import (
    GenerationDefaults,
    has_component,
    read_component_config,
    read_model_index,
)


@dataclass(frozen=True)
class VideoGeometry:
    """What the model accepts: sizes that are multiples of `size_multiple`, `frame_step`*k+1 frames."""

    size_multiple: int
    frame_step: int  # 1: any frame count
    size_rule: str  # why the multiple, for error messages

    def frames_ok(self, num_frames: int) -> bool:
        return (num_frames - 1) % self.frame_step == 0

    @property
    def frame_rule(self) -> str:
        step = self.frame_step
        if step == 1:
            return "any count from 1"
        examples = ", ".join(str(step * k + 1) for k in range(4))
        return f"{step}k+1 ({examples}, ...)"


@dataclass(frozen=True)
class VideoJob:
    """A validated request with every default filled in: exactly what the pipeline runs."""

    image: Image.Image
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: float
    steps: int
    guidance_scale: float
    seed: int


StepCallback = Callable[..., dict]


class VideoFamily:
    class_name: str
    uses_prompt: bool
    defaults: GenerationDefaults

    def geometry(self, source: str) -> VideoGeometry:
        raise NotImplementedError

    def checkpoint_defaults(self, source: str) -> GenerationDefaults:
        return self.defaults

    def call_arguments(
        self, job: VideoJob, generators: list[torch.Generator], callback: StepCallback | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def frames(output) -> np.ndarray:
        """(frames, height, width, 3) floats in 0..1 from the pipeline's `np` output."""
        return np.asarray(output.frames[0])


class WanImageToVideo(VideoFamily):
    """Wan 2.1 / 2.2 image-to-video: frames 4k+1, sizes multiples of VAE scale x patch size."""

    class_name = "WanImageToVideoPipeline"
    uses_prompt = True
    defaults = GenerationDefaults(width=832, height=480, num_frames=81, steps=40, fps=16, guidance_scale=5.0)

    def geometry(self, source: str) -> VideoGeometry:
        vae = read_component_config(source, "vae")
        denoiser = "transformer" if has_component(read_model_index(source), "transformer") else "transformer_2"
        patch = read_component_config(source, denoiser).get("patch_size") or (1, 2, 2)
        spatial = int(vae.get("scale_factor_spatial") or 8)
        temporal = int(vae.get("scale_factor_temporal") or 4)
        return VideoGeometry(
            spatial * int(patch[1]), temporal, f"VAE scale factor {spatial} x transformer patch size {patch[1]}"
        )

    def call_arguments(self, job: VideoJob, generators, callback) -> dict[str, Any]:
        return dict(
            image=job.image,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            height=job.height,
            width=job.width,
            num_frames=job.num_frames,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance_scale,
            generator=generators,
            output_type="np",
            callback_on_step_end=callback,
        )


class StableVideoDiffusion(VideoFamily):
    """Stable Video Diffusion: image-only conditioning (the prompt is not used), any frame count."""

    class_name = "StableVideoDiffusionPipeline"
    uses_prompt = False
    defaults = GenerationDefaults(width=1024, height=576, num_frames=14, steps=25, fps=7, guidance_scale=3.0)
    decode_chunk_size = 8  # frames decoded at once: bounds the VAE's peak memory

    def geometry(self, source: str) -> VideoGeometry:
        levels = len(read_component_config(source, "vae").get("block_out_channels") or [0, 0, 0, 0])
        scale = 2 ** (levels - 1)
        return VideoGeometry(math.lcm(2, scale), 1, f"VAE scale factor {scale}, and even for h264")

    def checkpoint_defaults(self, source: str) -> GenerationDefaults:
        trained_frames = int(read_component_config(source, "unet").get("num_frames") or 0)
        return self.defaults.overridden_by(GenerationDefaults(num_frames=trained_frames))

    def call_arguments(self, job: VideoJob, generators, callback) -> dict[str, Any]:
        return dict(
            image=job.image,
            height=job.height,
            width=job.width,
            num_frames=job.num_frames,
            num_inference_steps=job.steps,
            min_guidance_scale=min(1.0, job.guidance_scale),
            max_guidance_scale=job.guidance_scale,
            fps=round(job.fps),
            generator=generators,
            output_type="np",
            decode_chunk_size=self.decode_chunk_size,
            callback_on_step_end=callback,
        )


FAMILIES: dict[str, VideoFamily] = {family.class_name: family for family in (WanImageToVideo(), StableVideoDiffusion())}

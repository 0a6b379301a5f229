"""VideoGen engines: image-to-video with diffusers pipelines (Wan image-to-video, Stable Video Diffusion).

`generate(request, cancel, emit)` runs in a worker thread. It validates the request against the
model's geometry (read from config files, before any weight loads), loads the model through the
ModelManager, runs the pipeline with a per-step callback that reports progress and stops at the
next step when cancelled, encodes the frames to an h264 mp4 and emits it in chunks under 4 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import structlog

from capmesh.services.common.video import encode_mp4
from capmesh.services.diffusion.engine_base import DiffusersEngine, ModelSpec, PipelineCall, Rendered
from capmesh.services.diffusion.media import to_uint8
from capmesh.services.diffusion.stepping import StageTimes, cpu_generators, stage_update
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import ProducedFile, file_chunks
from capmesh.services.runtime.lifecycle import ModelManager
from capmesh.services.runtime.progress import Emit
from capmesh.services.videogen import tiny
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import MP4, VideoRequest, VideoResult
from capmesh.services.videogen.families import FAMILIES, VideoFamily, VideoGeometry, VideoJob
from capmesh.services.videogen.validation import validate_request

log = structlog.get_logger("capmesh.videogen")

ENCODING_IMAGE = "encoding_image"
ENCODING_VIDEO = "encoding_video"


class VideoEngine(Protocol):
    name: str
    models: ModelManager

    def validate(self, request: VideoRequest) -> VideoJob: ...

    def generate(self, request: VideoRequest, cancel: CancelToken, emit: Emit) -> VideoResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class VideoModelSpec(ModelSpec[VideoGeometry]):
    family: VideoFamily  # the pipeline class's rules: geometry, defaults, call arguments, output


class DiffusersVideoEngine(DiffusersEngine[VideogenSettings, VideoModelSpec]):
    # -- models --------------------------------------------------------------------------------
    def _read_spec(self, name: str) -> VideoModelSpec:
        checkpoint, class_name = self._resolve(name, tiny.tiny_path, FAMILIES)
        family = FAMILIES[class_name]
        defaults = self._defaults(checkpoint, family.checkpoint_defaults(checkpoint.source))
        return VideoModelSpec(checkpoint, family.geometry(checkpoint.source), defaults, family)

    # -- generation ----------------------------------------------------------------------------
    def validate(self, request: VideoRequest) -> VideoJob:
        """Checks the request against the limits and the model's rules; the job to run, defaults filled in."""
        spec = self.spec(self.models.resolve(request.model))
        return validate_request(request, self._settings, spec.geometry, spec.defaults)

    def generate(self, request: VideoRequest, cancel: CancelToken, emit: Emit) -> VideoResult:
        rendered = self.render(request, cancel, emit)
        job, frames, times = rendered.job, rendered.pixels, rendered.run.times
        video = self._encode(frames, job.fps, cancel, emit, times)
        for chunk in file_chunks(video, self._settings.chunk_bytes):
            emit(chunk)
        height, width = frames.shape[1:3]
        log.info(
            "videogen.generated",
            model=rendered.run.model,
            frames=len(frames),
            width=width,
            height=height,
            steps=rendered.run.steps,
            seed=job.seed,
            bytes=len(video),
            stage_seconds={k: round(s, 4) for k, s in times.seconds.items()},
        )
        return VideoResult(
            artifact=ProducedFile.of(video, MP4),
            width=width,
            height=height,
            num_frames=len(frames),
            fps=job.fps,
            steps=rendered.run.steps,
            seed=job.seed,
            model=rendered.run.model,
            random_weights=rendered.run.random_weights,
            duration_seconds=len(frames) / job.fps,
            stage_seconds=dict(times.seconds),
            seconds_per_step=rendered.run.seconds_per_step,
        )

    def render(self, request: VideoRequest, cancel: CancelToken, emit: Emit) -> Rendered[VideoJob]:
        """Validates, loads and runs the pipeline: the frames before video encoding."""
        name = self.models.resolve(request.model)
        spec = self.spec(name)
        job = self.validate(request)
        if request.prompt and not spec.family.uses_prompt:
            log.info("videogen.prompt_ignored", model=name, pipeline=spec.family.class_name)
        output, run = self.run_pipeline(name, _pipeline_call(spec.family, job), cancel, emit)
        return Rendered(to_uint8(spec.family.frames(output)), job, run)

    def _encode(self, frames: np.ndarray, fps: float, cancel: CancelToken, emit: Emit, times: StageTimes) -> bytes:
        total = len(frames)

        def frame_encoded(index: int) -> None:
            emit(
                stage_update(
                    ENCODING_VIDEO,
                    f"encoded frame {index + 1}/{total}",
                    (index + 1) / total,
                    step=index + 1,
                    total_steps=total,
                )
            )
            cancel.raise_if_cancelled()

        emit(stage_update(ENCODING_VIDEO, "encoding the frames to h264 mp4", step=0, total_steps=total))
        with times.measure(ENCODING_VIDEO):
            return encode_mp4(frames, fps, on_frame=frame_encoded)


def _pipeline_call(family: VideoFamily, job: VideoJob) -> PipelineCall:
    return PipelineCall(
        ENCODING_IMAGE,
        "encoding the input image and the prompt",
        job.steps,
        lambda callback: family.call_arguments(job, cpu_generators(job.seed), callback),
        workload=f"{job.width}x{job.height}x{job.num_frames}",
        fewer="frames",
    )


def make_engine(settings: VideogenSettings) -> VideoEngine:
    if settings.engine == "diffusers":
        return DiffusersVideoEngine(settings)
    raise ValueError(f"unknown videogen engine {settings.engine!r}")

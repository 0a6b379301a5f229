"""ImageGen on local diffusers text-to-image pipelines, loaded with `AutoPipelineForText2Image`."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import structlog
import torch

from capmesh.services.diffusion.checkpoints import Checkpoint, GenerationDefaults, resolve_checkpoint
from capmesh.services.diffusion.loading import load_pipeline, loaded_pipeline_model, supported_class_name
from capmesh.services.diffusion.media import chunks, encode_png, to_uint8
from capmesh.services.diffusion.placement import resolve_placement
from capmesh.services.diffusion.stepping import (
    LOADING_MODEL,
    DenoisingMonitor,
    StageTimes,
    cpu_generators,
    denoiser_of,
    stage_update,
)
from capmesh.services.imagegen import tiny
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import PNG, GeneratedImage, ImageChunk, ImageRequest, ImagesResult
from capmesh.services.imagegen.geometry import ImageGeometry, image_geometry, text_to_image_class_names
from capmesh.services.imagegen.validation import ImageJob, ImageLimits, validate_request
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import ModelLoadError, ResourceExhausted
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, release_memory

log = structlog.get_logger("capmesh.imagegen")

ENCODING_PROMPT = "encoding_prompt"
ENCODING_IMAGES = "encoding_images"


@dataclass(frozen=True)
class ModelSpec:
    """A served model from its config files only: enough to validate requests without loading it."""

    checkpoint: Checkpoint
    class_name: str
    geometry: ImageGeometry
    defaults: GenerationDefaults


@dataclass(frozen=True)
class RenderedImages:
    """The pipeline's images (uint8, n x height x width x 3) and how they were made."""

    pixels: np.ndarray
    job: ImageJob
    times: StageTimes
    model: str
    random_weights: bool
    steps: int
    seconds_per_step: float


class DiffusersImageEngine:
    name = "diffusers"

    def __init__(self, settings: ImagegenSettings) -> None:
        self._settings = settings
        self._limits = ImageLimits.from_settings(settings)
        self._specs: dict[str, ModelSpec] = {}
        self._specs_lock = threading.Lock()
        # Pipelines keep per-call state (scheduler timesteps, guidance): one call at a time.
        self._pipeline_lock = threading.Lock()
        self.models = ModelManager(self._load, settings.served_models, residency=settings.residency,
                                   idle_unload_s=settings.idle_unload_s)

    # -- models --------------------------------------------------------------------------------
    def spec(self, name: str) -> ModelSpec:
        with self._specs_lock:
            if name not in self._specs:
                try:
                    self._specs[name] = self._read_spec(name)
                except Exception as exc:
                    raise ModelLoadError(f"model {name!r} cannot be used: {type(exc).__name__}: {exc}") from exc
            return self._specs[name]

    def _read_spec(self, name: str) -> ModelSpec:
        checkpoint = resolve_checkpoint(name, tiny_path=tiny.tiny_path)
        class_name = supported_class_name(checkpoint, text_to_image_class_names())
        configured = GenerationDefaults(width=self._settings.default_width, height=self._settings.default_height,
                                        steps=self._settings.default_steps)
        defaults = GenerationDefaults.load(checkpoint.source).overridden_by(configured)
        return ModelSpec(checkpoint, class_name, image_geometry(checkpoint.source), defaults)

    def _load(self, name: str) -> LoadedModel:
        from diffusers import AutoPipelineForText2Image

        spec = self.spec(name)
        placement = resolve_placement(self._settings.device, self._settings.dtype, self._settings.vae_dtype,
                                      self._settings.cpu_offload)
        pipeline = load_pipeline(spec.checkpoint, placement, AutoPipelineForText2Image.from_pretrained)
        return loaded_pipeline_model(pipeline, spec.checkpoint, placement, type(pipeline).__name__)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, request: ImageRequest, cancel: CancelToken, emit) -> ImagesResult:
        rendered = self.render(request, cancel, emit)
        images: list[GeneratedImage] = []
        emit(stage_update(ENCODING_IMAGES, "encoding PNG images", step=0, total_steps=len(rendered.pixels)))
        with rendered.times.measure(ENCODING_IMAGES):
            for index, pixels in enumerate(rendered.pixels):
                cancel.raise_if_cancelled()
                png = encode_png(pixels)
                for offset, piece in chunks(png, self._settings.chunk_bytes):
                    emit(ImageChunk(index, piece, offset))
                height, width = pixels.shape[:2]
                images.append(GeneratedImage(index, PNG, width, height, len(png), hashlib.sha256(png).hexdigest(),
                                             rendered.job.seed + index))
                emit(stage_update(ENCODING_IMAGES, f"encoded image {index + 1}/{len(rendered.pixels)}",
                                  (index + 1) / len(rendered.pixels), step=index + 1,
                                  total_steps=len(rendered.pixels)))
        log.info("imagegen.generated", model=rendered.model, images=len(images), steps=rendered.steps,
                 seed=rendered.job.seed, stage_seconds={k: round(s, 4) for k, s in rendered.times.seconds.items()})
        return ImagesResult(images, rendered.model, rendered.random_weights, rendered.steps,
                            dict(rendered.times.seconds), rendered.seconds_per_step)

    def render(self, request: ImageRequest, cancel: CancelToken, emit) -> RenderedImages:
        """Validates, loads and runs the pipeline: the images before PNG encoding."""
        name = self.models.resolve(request.model)
        spec = self.spec(name)
        job = validate_request(request, self._limits, spec.geometry, spec.defaults)
        cancel.raise_if_cancelled()
        times = StageTimes()
        if name not in self.models.loaded_models():
            emit(stage_update(LOADING_MODEL, f"loading model {name}"))
        with times.measure(LOADING_MODEL):
            self.models.ensure_loaded(name)
        with self.models.use(name) as loaded, self._exclusive_pipeline(cancel):
            pixels, monitor = self._run_pipeline(loaded.handle, job, cancel, emit, times)
        return RenderedImages(pixels, job, times, name, loaded.random_weights, monitor.steps_done,
                              monitor.seconds_per_step)

    @contextmanager
    def _exclusive_pipeline(self, cancel: CancelToken) -> Iterator[None]:
        while not self._pipeline_lock.acquire(timeout=0.05):
            cancel.raise_if_cancelled()
        try:
            yield
        finally:
            self._pipeline_lock.release()

    def _run_pipeline(self, pipeline, job: ImageJob, cancel: CancelToken, emit, times: StageTimes):
        emit(stage_update(ENCODING_PROMPT, "encoding the prompt"))
        monitor = DenoisingMonitor(emit, cancel, job.steps or 0, encoding_stage=ENCODING_PROMPT)
        arguments = dict(
            prompt=job.prompt, num_images_per_prompt=job.num_images, generator=cpu_generators(job.seed, job.num_images),
            output_type="np", callback_on_step_end=monitor.callback,
        )
        # Unset fields stay out so that each pipeline family applies its own defaults.
        optional = dict(negative_prompt=job.negative_prompt or None, width=job.width, height=job.height,
                        num_inference_steps=job.steps, guidance_scale=job.guidance_scale)
        arguments.update({key: value for key, value in optional.items() if value is not None})
        try:
            with monitor.watching(denoiser_of(pipeline)):
                output = pipeline(**arguments)
        except torch.OutOfMemoryError as exc:
            pipeline.maybe_free_model_hooks()
            release_memory()
            raise ResourceExhausted(
                f"the accelerator ran out of memory for {job.num_images} image(s): try fewer images, a smaller "
                "size or cpu_offload", retry_after_s=5.0, reason="OUT_OF_MEMORY",
            ) from exc
        except BaseException:
            pipeline.maybe_free_model_hooks()  # a cancelled call leaves offloaded components in place
            raise
        monitor.record(times, time.perf_counter())
        return to_uint8(np.asarray(output.images)), monitor

    def close(self) -> None:
        self.models.close()

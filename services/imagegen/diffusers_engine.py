"""ImageGen on local diffusers text-to-image pipelines, loaded with `AutoPipelineForText2Image`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import structlog

from capmesh.services.diffusion.engine_base import DiffusersEngine, ModelSpec, PipelineCall, Rendered
from capmesh.services.diffusion.media import encode_png, to_uint8
from capmesh.services.diffusion.stepping import cpu_generators, stage_update
from capmesh.services.imagegen import tiny
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import PNG, GeneratedImage, ImageRequest, ImagesResult
from capmesh.services.imagegen.geometry import ImageGeometry, image_geometry, text_to_image_class_names
from capmesh.services.imagegen.validation import ImageJob, validate_request
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import ProducedFile, file_chunks

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline  # the real class, see diffusion/loading.py

log = structlog.get_logger("capmesh.imagegen")

ENCODING_PROMPT = "encoding_prompt"
ENCODING_IMAGES = "encoding_images"


class DiffusersImageEngine(DiffusersEngine[ImagegenSettings, ModelSpec[ImageGeometry]]):
    # -- models --------------------------------------------------------------------------------
    def _read_spec(self, name: str) -> ModelSpec[ImageGeometry]:
        # AutoPipelineForText2Image picks the class itself: the name only has to be a text-to-image one.
        checkpoint, _ = self._resolve(name, tiny.tiny_path, text_to_image_class_names())
        return ModelSpec(checkpoint, image_geometry(checkpoint.source), self._defaults(checkpoint))

    def _from_pretrained(self) -> Callable[..., DiffusionPipeline]:
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image.from_pretrained

    # -- generation ----------------------------------------------------------------------------
    def generate(self, request: ImageRequest, cancel: CancelToken, emit) -> ImagesResult:
        rendered = self.render(request, cancel, emit)
        images: list[GeneratedImage] = []
        emit(stage_update(ENCODING_IMAGES, "encoding PNG images", step=0, total_steps=len(rendered.pixels)))
        with rendered.run.times.measure(ENCODING_IMAGES):
            for index, pixels in enumerate(rendered.pixels):
                cancel.raise_if_cancelled()
                png = encode_png(pixels)
                for chunk in file_chunks(png, self._settings.chunk_bytes, index):
                    emit(chunk)
                height, width = pixels.shape[:2]
                images.append(
                    GeneratedImage(index, ProducedFile.of(png, PNG), width, height, rendered.job.seed + index)
                )
                emit(
                    stage_update(
                        ENCODING_IMAGES,
                        f"encoded image {index + 1}/{len(rendered.pixels)}",
                        (index + 1) / len(rendered.pixels),
                        step=index + 1,
                        total_steps=len(rendered.pixels),
                    )
                )
        log.info(
            "imagegen.generated",
            model=rendered.run.model,
            images=len(images),
            steps=rendered.run.steps,
            seed=rendered.job.seed,
            stage_seconds={k: round(s, 4) for k, s in rendered.run.times.seconds.items()},
        )
        return ImagesResult(
            images,
            rendered.run.model,
            rendered.run.random_weights,
            rendered.run.steps,
            dict(rendered.run.times.seconds),
            rendered.run.seconds_per_step,
        )

    def render(self, request: ImageRequest, cancel: CancelToken, emit) -> Rendered[ImageJob]:
        """Validates, loads and runs the pipeline: the images before PNG encoding."""
        name = self.models.resolve(request.model)
        spec = self.spec(name)
        job = validate_request(request, self._settings, spec.geometry, spec.defaults)
        output, run = self.run_pipeline(name, _pipeline_call(job), cancel, emit)
        return Rendered(to_uint8(np.asarray(output.images)), job, run)


def _pipeline_call(job: ImageJob) -> PipelineCall:
    def arguments(callback) -> dict:
        values = dict(
            prompt=job.prompt,
            num_images_per_prompt=job.num_images,
            generator=cpu_generators(job.seed, job.num_images),
            output_type="np",
            callback_on_step_end=callback,
        )
        # Unset fields stay out so that each pipeline family applies its own defaults.
        optional = dict(
            negative_prompt=job.negative_prompt or None,
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance_scale,
        )
        values.update({key: value for key, value in optional.items() if value is not None})
        return values

    return PipelineCall(
        ENCODING_PROMPT,
        "encoding the prompt",
        job.steps or 0,
        arguments,
        workload=f"{job.num_images} image(s)",
        fewer="images",
    )

"""ImageGen requests and results as plain dataclasses (no protobuf): text-to-image generation.

Optional fields are None when the caller leaves them to the model's defaults (`DiffusionRequest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capmesh.services.diffusion.request import DiffusionRequest
from capmesh.services.runtime.chunks import ProducedFile

PNG = "image/png"


@dataclass(frozen=True, kw_only=True)
class ImageRequest(DiffusionRequest):
    """A prompt to `num_images` images; image i uses `seed` + i."""

    num_images: int = 1


@dataclass(frozen=True)
class GeneratedImage:
    """Image `index` of a result (its PNG went out as chunks of that index) and the seed that made it."""

    index: int
    artifact: ProducedFile
    width: int
    height: int
    seed: int | None  # None where the engine cannot seed (remote APIs)


@dataclass(frozen=True)
class ImagesResult:
    images: list[GeneratedImage]
    model: str
    random_weights: bool
    steps: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: float = 0.0

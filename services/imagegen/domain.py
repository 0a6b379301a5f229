"""ImageGen requests and results as plain dataclasses (no protobuf): text-to-image generation.

Optional fields are None when the caller leaves them to the model's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PNG = "image/png"


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None  # image i uses seed + i; None: a random seed, reported in the result
    num_images: int = 1
    model: str = ""  # "": the service's default model


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    mime_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    seed: int | None  # None where the engine cannot seed (remote APIs)


@dataclass(frozen=True)
class ImagesResult:
    images: list[GeneratedImage]
    model: str
    random_weights: bool
    steps: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: float = 0.0

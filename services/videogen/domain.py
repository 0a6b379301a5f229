"""VideoGen requests and results as plain dataclasses (no protobuf): image-to-video generation.

Optional fields are None when the caller leaves them to the model's defaults (`DiffusionRequest`);
`validate_request` decides whether an explicit value is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capmesh.services.diffusion.request import DiffusionRequest
from capmesh.services.runtime.chunks import ProducedFile

MP4 = "video/mp4"


@dataclass(frozen=True, kw_only=True)
class VideoRequest(DiffusionRequest):
    """A first frame to animate; width and height None: from the image's aspect ratio and the model's
    default area."""

    image: bytes  # the first frame: PNG, JPEG or WebP bytes
    num_frames: int | None = None
    fps: float | None = None


@dataclass(frozen=True)
class VideoResult:
    """The mp4 (whose bytes went out as chunks) and how it was made."""

    artifact: ProducedFile
    width: int
    height: int
    num_frames: int
    fps: float
    steps: int
    seed: int
    model: str
    random_weights: bool
    duration_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: float = 0.0

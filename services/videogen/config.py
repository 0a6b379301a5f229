"""VideoGen settings, read from `CAPMESH_VIDEOGEN_*` environment variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from capmesh.services.diffusion.settings import DiffusionSettings

ENV_PREFIX = "VIDEOGEN"


@dataclass(frozen=True)
class VideogenSettings(DiffusionSettings):
    limits: ClassVar[tuple[str, ...]] = (*DiffusionSettings.limits, "max_frames", "max_fps", "max_input_pixels")
    request_defaults: ClassVar[tuple[str, ...]] = (
        *DiffusionSettings.request_defaults,
        "default_num_frames",
        "default_fps",
    )

    max_frames: int = 129
    max_fps: int = 60
    max_input_pixels: int = 40_000_000
    # Defaults for fields a request leaves unset; 0: the pipeline family's default.
    default_num_frames: int = 0
    default_fps: int = 0

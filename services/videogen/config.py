"""VideoGen settings, read from `CAPMESH_VIDEOGEN_*` environment variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass

from capmesh.services.diffusion.placement import Offload, check_placement_settings
from capmesh.services.runtime.settings import MiB, ServerSettings, check
from capmesh.services.runtime.tiny import TINY

ENV_PREFIX = "VIDEOGEN"
ENGINES = ("diffusers",)


@dataclass(frozen=True)
class VideogenSettings(ServerSettings):
    engine: str = "diffusers"
    model: str = TINY  # tiny, a local diffusers folder or a hub id; served as the default model
    extra_models: tuple[str, ...] = ()  # further models a request may name
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16
    vae_dtype: str = ""  # empty: same as dtype; Wan's VAE is usually run in float32
    cpu_offload: Offload = Offload.NONE  # none, model, sequential (for GPUs smaller than the model)
    max_concurrency: int = 1  # one pipeline call at a time per GPU; more calls queue
    max_width: int = 1280
    max_height: int = 1280
    max_frames: int = 129
    max_steps: int = 100
    max_fps: int = 60
    max_prompt_chars: int = 4000
    max_input_pixels: int = 40_000_000
    # Defaults for fields a request leaves unset; 0: the checkpoint's or the pipeline family's default.
    default_width: int = 0
    default_height: int = 0
    default_num_frames: int = 0
    default_steps: int = 0
    default_fps: int = 0
    chunk_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in ENGINES, "engine", self.engine, f"must be one of {', '.join(ENGINES)}")
        check(bool(self.model), "model", self.model, "must name a model (tiny, a folder or a hub id)")
        check_placement_settings(self.device, self.dtype, self.vae_dtype, self.cpu_offload)
        for name in (
            "max_width",
            "max_height",
            "max_frames",
            "max_steps",
            "max_fps",
            "max_prompt_chars",
            "max_input_pixels",
        ):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        for name in ("default_width", "default_height", "default_num_frames", "default_steps", "default_fps"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be 0 (model default) or more")
        check(
            1024 <= self.chunk_bytes < 4 * MiB,
            "chunk_bytes",
            self.chunk_bytes,
            "must be at least 1024 and below 4 MiB (4194304)",
        )

    @property
    def served_models(self) -> list[str]:
        return [self.model, *(name for name in self.extra_models if name != self.model)]

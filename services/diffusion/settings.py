"""The settings every diffusers capability has (ImageGen, VideoGen): model, placement, limits, defaults.

A capability's settings class derives from `DiffusionSettings`, may change a default (its own size
limits) and adds its own fields; it names the extra limits and request defaults it adds in
`limits` and `request_defaults` so that the one `__post_init__` here checks them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.diffusion.placement import Offload, check_placement_settings
from capmesh.services.runtime.settings import MiB, ServerSettings, check
from capmesh.services.runtime.tiny import TINY


@dataclass(frozen=True)
class DiffusionSettings(ServerSettings):
    engines: ClassVar[tuple[str, ...]] = ("diffusers",)
    # Fields that must be at least 1, and fields where 0 means the checkpoint's or the pipeline's default.
    limits: ClassVar[tuple[str, ...]] = ("max_width", "max_height", "max_steps", "max_prompt_chars")
    request_defaults: ClassVar[tuple[str, ...]] = ("default_width", "default_height", "default_steps")

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
    max_steps: int = 100
    max_prompt_chars: int = 4000
    # Defaults for fields a request leaves unset; 0: the checkpoint's or the pipeline's default.
    default_width: int = 0
    default_height: int = 0
    default_steps: int = 0
    chunk_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in self.engines, "engine", self.engine, f"must be one of {', '.join(self.engines)}")
        check(bool(self.model), "model", self.model, "must name a model (tiny, a folder or a hub id)")
        check_placement_settings(self.device, self.dtype, self.vae_dtype, self.cpu_offload)
        for name in self.limits:
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        for name in self.request_defaults:
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be 0 (model default) or more")
        check(
            1024 <= self.chunk_bytes < 4 * MiB,
            "chunk_bytes",
            self.chunk_bytes,
            "must be at least 1024 and below 4 MiB (4194304)",
        )

    @property
    def generation_defaults(self) -> GenerationDefaults:
        """The configured `default_<field>` values, which win over a checkpoint's own defaults."""
        return GenerationDefaults(
            **{name.removeprefix("default_"): getattr(self, name) for name in self.request_defaults}
        )

    @property
    def default_model(self) -> str:
        """The model served to requests that name none."""
        return self.model

    @property
    def served_models(self) -> list[str]:
        return [self.default_model, *(name for name in self.extra_models if name != self.default_model)]

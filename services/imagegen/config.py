"""ImageGen settings, read from `CAPMESH_IMAGEGEN_*` environment variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from capmesh.services.diffusion.placement import Offload, check_placement_settings
from capmesh.services.runtime.settings import MiB, ServerSettings, check
from capmesh.services.runtime.tiny import TINY

ENV_PREFIX = "IMAGEGEN"
ENGINES = ("diffusers", "openai")


@dataclass(frozen=True)
class ImagegenSettings(ServerSettings):
    engine: str = "diffusers"  # diffusers (local pipelines) or openai (an OpenAI-compatible API)
    model: str = TINY  # diffusers: tiny, a local folder or a hub id; served as the default model
    extra_models: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "auto"
    vae_dtype: str = ""
    cpu_offload: Offload = Offload.NONE
    max_concurrency: int = 1  # one pipeline call at a time per GPU; more calls queue
    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_images: int = 8
    max_prompt_chars: int = 4000
    # Defaults for fields a request leaves unset; 0: the checkpoint's or the pipeline's default.
    default_width: int = 0
    default_height: int = 0
    default_steps: int = 0
    chunk_bytes: int = 1 * MiB
    # engine=openai
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = field(default="", repr=False)  # a secret: never in logs or reprs
    openai_model: str = "gpt-image-1"
    openai_response_format: str = ""  # b64_json or url; empty: the API's default (some models refuse the field)
    openai_default_size: str = "1024x1024"
    openai_timeout_s: float = 120.0
    openai_max_retries: int = 3
    openai_backoff_base_s: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in ENGINES, "engine", self.engine, f"must be one of {', '.join(ENGINES)}")
        check(bool(self.model), "model", self.model, "must name a model (tiny, a folder or a hub id)")
        check_placement_settings(self.device, self.dtype, self.vae_dtype, self.cpu_offload)
        for name in ("max_width", "max_height", "max_steps", "max_images", "max_prompt_chars"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        for name in ("default_width", "default_height", "default_steps"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be 0 (model default) or more")
        check(
            1024 <= self.chunk_bytes < 4 * MiB,
            "chunk_bytes",
            self.chunk_bytes,
            "must be at least 1024 and below 4 MiB (4194304)",
        )
        check(
            self.openai_response_format in ("", "b64_json", "url"),
            "openai_response_format",
            self.openai_response_format,
            "must be empty, b64_json or url",
        )
        check(
            parse_size(self.openai_default_size) is not None,
            "openai_default_size",
            self.openai_default_size,
            "must be WIDTHxHEIGHT, e.g. 1024x1024",
        )
        check(self.openai_timeout_s > 0, "openai_timeout_s", self.openai_timeout_s, "must be greater than 0")
        check(self.openai_max_retries >= 0, "openai_max_retries", self.openai_max_retries, "must be 0 or more")

    @property
    def served_models(self) -> list[str]:
        default = self.openai_model if self.engine == "openai" else self.model
        return [default, *(name for name in self.extra_models if name != default)]


def parse_size(text: str) -> tuple[int, int] | None:
    """'1024x768' -> (1024, 768); None when it is not WIDTHxHEIGHT with positive numbers."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) <= 0 or int(height) <= 0:
        return None
    return int(width), int(height)

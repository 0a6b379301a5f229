"""ImageGen settings, read from `CAPMESH_IMAGEGEN_*` environment variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from capmesh.services.diffusion.settings import DiffusionSettings
from capmesh.services.runtime.settings import check

ENV_PREFIX = "IMAGEGEN"


@dataclass(frozen=True)
class ImagegenSettings(DiffusionSettings):
    engines: ClassVar[tuple[str, ...]] = ("diffusers", "openai")
    limits: ClassVar[tuple[str, ...]] = (*DiffusionSettings.limits, "max_images")

    engine: str = "diffusers"  # diffusers (local pipelines) or openai (an OpenAI-compatible API)
    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_images: int = 8
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
    def default_model(self) -> str:
        return self.openai_model if self.engine == "openai" else self.model


def parse_size(text: str) -> tuple[int, int] | None:
    """'1024x768' -> (1024, 768); None when it is not WIDTHxHEIGHT with positive numbers."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) <= 0 or int(height) <= 0:
        return None
    return int(width), int(height)

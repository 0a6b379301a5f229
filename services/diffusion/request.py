"""What every diffusion request carries (ImageGen, VideoGen), and how it is read from a request message.

A capability's request derives from `DiffusionRequest` and adds its own fields (ImageGen: how many
images; VideoGen: the first frame, frames and fps). None leaves a field to the model's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class DiffusionRequest:
    prompt: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None  # None: a random seed, reported in the result
    model: str = ""  # "": the service's default model


def common_fields(message: Any) -> dict[str, Any]:
    """The `DiffusionRequest` fields of a request message (the protos name them alike): 0 for a size
    and an unset optional field both mean None, the model's default."""

    def optional(name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None

    return {
        "prompt": message.prompt,
        "negative_prompt": message.negative_prompt,
        "width": message.width or None,
        "height": message.height or None,
        "steps": optional("steps"),
        "guidance_scale": optional("guidance_scale"),
        "seed": optional("seed"),
        "model": message.model,
    }

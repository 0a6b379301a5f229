"""The request checks ImageGen and VideoGen share: prompt lengths, output size, guidance, integer ranges.

Each check adds its violations to the caller's `Violations`, so one error still names every bad field.
"""

from __future__ import annotations

import math
from typing import Protocol

from capmesh.services.runtime.errors import Violations

MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0


class PromptedRequest(Protocol):
    """The fields an ImageRequest and a VideoRequest have in common."""

    @property
    def prompt(self) -> str: ...

    @property
    def negative_prompt(self) -> str: ...

    @property
    def width(self) -> int | None: ...

    @property
    def height(self) -> int | None: ...

    @property
    def guidance_scale(self) -> float | None: ...


def check_prompts(v: Violations, request: PromptedRequest, max_chars: int) -> None:
    for field_name in ("prompt", "negative_prompt"):
        text = getattr(request, field_name)
        v.check(len(text) <= max_chars, field_name, f"must be at most {max_chars} characters; got {len(text)}")


def check_size(
    v: Violations, request: PromptedRequest, max_width: int, max_height: int, multiple: int, size_rule: str | None
) -> None:
    """Width and height, when set, up to their limit and multiples of `multiple` (`size_rule` says why;
    None when the model states no rule, as with remote engines)."""
    for field_name, limit in (("width", max_width), ("height", max_height)):
        value = getattr(request, field_name)
        if value is None:
            continue
        if value <= 0 or value > limit:
            v.add(field_name, f"must be between {multiple} and {limit}; got {value}")
        elif size_rule is not None and value % multiple:
            v.add(field_name, f"must be a multiple of {multiple} for this model ({size_rule}); got {value}")


def check_guidance(v: Violations, request: PromptedRequest) -> None:
    g = request.guidance_scale
    if g is not None:
        v.check(
            math.isfinite(g) and 0.0 <= g <= MAX_GUIDANCE,
            "guidance_scale",
            f"must be between 0 and {MAX_GUIDANCE:g}; got {g}",
        )


def check_range(v: Violations, field_name: str, value: int | None, low: int, high: int) -> None:
    if value is not None:
        v.check(low <= value <= high, field_name, f"must be between {low} and {high}; got {value}")

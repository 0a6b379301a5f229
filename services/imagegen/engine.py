"""ImageGen engines (text-to-image), chosen by the `engine` setting: `diffusers` or `openai`.

`generate(request, cancel, emit)` runs in a worker thread: it emits ProgressUpdate items and
FileChunk pieces of each PNG (`index` = the image) (in order per image), and returns the ImagesResult.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import ImageRequest, ImagesResult
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import ModelManager


class ImageEngine(Protocol):
    name: str
    models: ModelManager

    def generate(self, request: ImageRequest, cancel: CancelToken, emit: Callable[[object], None]) -> ImagesResult: ...

    def close(self) -> None: ...


def make_engine(settings: ImagegenSettings) -> ImageEngine:
    if settings.engine == "diffusers":
        from capmesh.services.imagegen.diffusers_engine import DiffusersImageEngine

        return DiffusersImageEngine(settings)
    if settings.engine == "openai":
        from capmesh.services.imagegen.openai_engine import OpenAIImageEngine

        return OpenAIImageEngine(settings)
    raise ValueError(f"unknown imagegen engine {settings.engine!r}")

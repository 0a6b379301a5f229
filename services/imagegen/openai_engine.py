"""ImageGen through an OpenAI-compatible `/images/generations` endpoint.

The call goes through the shared remote client (its retry policy, key handling and error mapping).
Answers may carry `b64_json` or a `url`; a url is fetched once. Whatever format the API returns,
images are delivered as PNG like the local engine's. The API does not report steps and cannot be
seeded, so progress has request/download stages only and results carry no seed.
"""

from __future__ import annotations

import base64
import binascii
import io

import httpx
import structlog
from PIL import Image

from capmesh.services.common.remote_http import RemoteApiClient
from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.imagegen.config import ENV_PREFIX, ImagegenSettings, parse_size
from capmesh.services.imagegen.domain import PNG, GeneratedImage, ImageRequest, ImagesResult
from capmesh.services.imagegen.validation import validate_request
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import ProducedFile, file_chunks
from capmesh.services.runtime.errors import Unavailable
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.runtime.progress import ProgressUpdate

log = structlog.get_logger("capmesh.imagegen")

GENERATIONS_PATH = "images/generations"


class OpenAIImageEngine:
    name = "openai"

    def __init__(self, settings: ImagegenSettings) -> None:
        self._settings = settings
        self._client = RemoteApiClient(settings, ENV_PREFIX)
        self._downloads = httpx.Client(timeout=settings.openai_timeout_s, follow_redirects=True)
        # Remote models need no loading; the manager still gives status and the served-model list.
        self.models = ModelManager(
            self._describe, settings.served_models, residency=settings.residency, idle_unload_s=settings.idle_unload_s
        )

    def _describe(self, name: str) -> LoadedModel:
        return LoadedModel(handle=name, device=f"remote {self._settings.openai_base_url}", details={"engine": "openai"})

    def generate(self, request: ImageRequest, cancel: CancelToken, emit) -> ImagesResult:
        name = self.models.resolve(request.model)
        job = validate_request(request, self._settings, None, GenerationDefaults())
        default_size = parse_size(self._settings.openai_default_size)
        if default_size is None:  # the settings' own check rejects such a size when they are read
            raise ValueError(f"openai_default_size {self._settings.openai_default_size!r} is not WIDTHxHEIGHT")
        default_width, default_height = default_size
        size = f"{job.width or default_width}x{job.height or default_height}"
        body: dict[str, object] = {"model": name, "prompt": job.prompt, "n": job.num_images, "size": size}
        if self._settings.openai_response_format:
            body["response_format"] = self._settings.openai_response_format
        emit(ProgressUpdate(stage="requesting", percent=5.0, message=f"asking {name} for {job.num_images} image(s)"))
        with self.models.use(name):
            answer = self._client.post_json(GENERATIONS_PATH, body, cancel).json()
        items = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not items:
            raise Unavailable("the remote API answered without images", reason="REMOTE_BAD_ANSWER")
        images: list[GeneratedImage] = []
        for index, item in enumerate(items):
            cancel.raise_if_cancelled()
            png, width, height = _as_png(self._image_bytes(item, cancel))
            for chunk in file_chunks(png, self._settings.chunk_bytes, index):
                emit(chunk)
            images.append(GeneratedImage(index, ProducedFile.of(png, PNG), width, height, None))
            emit(
                ProgressUpdate(
                    stage="receiving",
                    percent=round(5.0 + 95.0 * (index + 1) / len(items), 2),
                    message=f"received image {index + 1}/{len(items)}",
                    step=index + 1,
                    total_steps=len(items),
                )
            )
        log.info("imagegen.generated", model=name, images=len(images), engine="openai", size=size)
        return ImagesResult(images, name, random_weights=False)

    def _image_bytes(self, item: dict, cancel: CancelToken) -> bytes:
        if item.get("b64_json"):
            try:
                return base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise Unavailable(
                    "the remote API sent an image that is not valid base64", reason="REMOTE_BAD_ANSWER"
                ) from exc
        if item.get("url"):
            cancel.raise_if_cancelled()
            try:
                response = self._downloads.get(item["url"])
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise Unavailable(
                    f"fetching the generated image failed: {type(exc).__name__}", reason="REMOTE_IMAGE_FETCH_FAILED"
                ) from exc
            return response.content
        raise Unavailable(
            "the remote API sent an image entry with neither b64_json nor url", reason="REMOTE_BAD_ANSWER"
        )

    def close(self) -> None:
        self.models.close()
        self._client.close()
        self._downloads.close()


def _as_png(data: bytes) -> tuple[bytes, int, int]:
    """PNG bytes and size; other formats (JPEG, WebP) are converted."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise Unavailable(
            f"the remote API sent data that is not an image ({type(exc).__name__})", reason="REMOTE_BAD_ANSWER"
        ) from exc
    if image.format == "PNG":
        return data, image.width, image.height
    buffer = io.BytesIO()
    image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG")
    return buffer.getvalue(), image.width, image.height

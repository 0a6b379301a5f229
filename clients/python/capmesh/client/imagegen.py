"""A typed helper over `capmesh.imagegen.v1.ImageGenService` (text-to-image).

from capmesh.client import sync_channel
from capmesh.client.imagegen import ImageGenClient

with sync_channel("127.0.0.1:50051") as channel:
    images = ImageGenClient(channel).generate("a lighthouse at dawn", num_images=2, seed=7)
    for index, png in enumerate(images.pngs):
        open(f"out-{index}.png", "wb").write(png)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import grpc

from capmesh.client.streams import StreamedFile, receive
from capmesh.common.v1 import progress_pb2
from capmesh.imagegen.v1 import imagegen_service_pb2 as pb
from capmesh.imagegen.v1 import imagegen_service_pb2_grpc as pb_grpc

__all__ = ["GeneratedImages", "ImageFields", "ImageGenClient", "images_request"]


@dataclass(frozen=True)
class GeneratedImages:
    """The PNG files in index order (each checked against its artifact's size and sha256) and the result."""

    pngs: list[bytes]
    result: pb.ImagesResult


class ImageFields(TypedDict, total=False):
    """The request's fields besides the prompt; one left out (or 0 / None) takes the model's default."""

    negative_prompt: str
    width: int
    height: int
    steps: int | None
    guidance_scale: float | None
    seed: int | None  # image i uses seed + i
    num_images: int
    model: str  # empty: the service's default


def images_request(prompt: str, **fields: Unpack[ImageFields]) -> pb.StreamGenerateImagesRequest:
    """The request message."""
    return pb.StreamGenerateImagesRequest(prompt=prompt, **fields)


class ImageGenClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.ImageGenServiceStub(channel)

    def generate(
        self,
        prompt: str,
        *,
        on_progress: Callable[[progress_pb2.Progress], None] | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **fields: Unpack[ImageFields],
    ) -> GeneratedImages:
        """Streams the generation, reporting each Progress; raises a CapmeshClientError on failure.

        `fields` are those of `ImageFields` (width, height, steps, seed, num_images ...).
        """
        request = images_request(prompt, **fields)
        files: dict[int, StreamedFile] = {}

        def file(index: int) -> StreamedFile:
            return files.setdefault(index, StreamedFile("imagegen", f"image {index}"))

        result = receive(
            self._stub.StreamGenerateImages(request, timeout=timeout, metadata=metadata),
            "imagegen",
            lambda chunk: file(chunk.index).add(chunk.offset, chunk.data),
            on_progress,
        )
        pngs = [file(image.index).verified(image.artifact) for image in result.images]
        return GeneratedImages(pngs, result)

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

import grpc

from capmesh.client.streams import StreamedFile, receive
from capmesh.common.v1 import progress_pb2
from capmesh.imagegen.v1 import imagegen_service_pb2 as pb
from capmesh.imagegen.v1 import imagegen_service_pb2_grpc as pb_grpc

__all__ = ["GeneratedImages", "ImageGenClient", "images_request"]


@dataclass(frozen=True)
class GeneratedImages:
    """The PNG files in index order (each checked against its artifact's size and sha256) and the result."""

    pngs: list[bytes]
    result: pb.ImagesResult


def images_request(
    prompt: str,
    *,
    negative_prompt: str = "",
    width: int = 0,
    height: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    num_images: int = 0,
    model: str = "",
) -> pb.StreamGenerateImagesRequest:
    """The request message; 0 / None leave a field to the model's default."""
    return pb.StreamGenerateImagesRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        num_images=num_images,
        model=model,
    )


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
        **fields,
    ) -> GeneratedImages:
        """Streams the generation, reporting each Progress; raises a CapmeshClientError on failure.

        `fields` are those of `images_request` (width, height, steps, seed, num_images ...).
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

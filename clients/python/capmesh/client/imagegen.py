"""A typed helper over `capmesh.imagegen.v1.ImageGenService` (text-to-image).

    from capmesh.client import sync_channel
    from capmesh.client.imagegen import ImageGenClient

    with sync_channel("127.0.0.1:50051") as channel:
        images = ImageGenClient(channel).generate("a lighthouse at dawn", num_images=2, seed=7)
        for index, png in enumerate(images.pngs):
            open(f"out-{index}.png", "wb").write(png)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from capmesh.client.errors import ServerError, from_rpc_error
from capmesh.common.v1 import progress_pb2
from capmesh.imagegen.v1 import imagegen_service_pb2 as pb
from capmesh.imagegen.v1 import imagegen_service_pb2_grpc as pb_grpc

__all__ = ["ImageGenClient", "GeneratedImages", "images_request"]


@dataclass(frozen=True)
class GeneratedImages:
    """The PNG files in index order (each checked against its size and sha256) and the result."""

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
        prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
        guidance_scale=guidance_scale, seed=seed, num_images=num_images, model=model,
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
        files: dict[int, bytearray] = {}
        try:
            for message in self._stub.StreamGenerateImages(request, timeout=timeout, metadata=metadata):
                kind = message.WhichOneof("event")
                if kind == "progress" and on_progress is not None:
                    on_progress(message.progress)
                elif kind == "chunk":
                    chunk = message.chunk
                    received = files.setdefault(chunk.image_index, bytearray())
                    if chunk.offset != len(received):
                        raise _broken(f"image {chunk.image_index}: chunk at offset {chunk.offset}, "
                                      f"expected {len(received)}")
                    received += chunk.data
                elif kind == "result":
                    return _checked(files, message.result)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        raise _broken("the stream ended without a result")


def _checked(files: dict[int, bytearray], result: pb.ImagesResult) -> GeneratedImages:
    pngs: list[bytes] = []
    for image in result.images:
        data = bytes(files.get(image.index, b""))
        if len(data) != image.size_bytes or hashlib.sha256(data).hexdigest() != image.sha256:
            raise _broken(f"image {image.index}: {len(data)} bytes that do not match its size and sha256")
        pngs.append(data)
    return GeneratedImages(pngs, result)


def _broken(what: str) -> ServerError:
    return ServerError(code=grpc.StatusCode.DATA_LOSS, message=f"imagegen stream broken: {what}")

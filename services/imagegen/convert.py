"""The one place where capmesh.imagegen.v1 messages and the ImageGen domain meet.

Proto3 zeros mean "the model's default" for width and height, and num_images 0 means 1; steps,
guidance_scale and seed are `optional`, so an explicit 0 reaches validation.
"""

from __future__ import annotations

from capmesh.imagegen.v1 import imagegen_service_pb2 as pb
from capmesh.services.diffusion.request import common_fields
from capmesh.services.imagegen.domain import ImageRequest, ImagesResult
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.protoconv import chunk_to_proto, event_response, message_from, produced_file_to_proto


def request_from_proto(request: pb.StreamGenerateImagesRequest) -> ImageRequest:
    return ImageRequest(**common_fields(request), num_images=request.num_images or 1)


def response_from_event(event: object) -> pb.StreamGenerateImagesResponse:
    """One engine event (progress, a piece of a PNG, or the result) as a stream message."""
    return event_response(
        pb.StreamGenerateImagesResponse,
        event,
        {FileChunk: ("chunk", chunk_to_proto), ImagesResult: ("result", result_to_proto)},
    )


def result_to_proto(result: ImagesResult) -> pb.ImagesResult:
    # Image i was made with seed + i; the result carries the first (remote engines cannot seed: 0).
    seeds = [image.seed for image in result.images if image.seed is not None]
    return message_from(
        pb.ImagesResult,
        result,
        images=[
            message_from(pb.GeneratedImage, image, artifact=produced_file_to_proto(image.artifact))
            for image in result.images
        ],
        seed=min(seeds) if seeds else 0,
    )

"""The one place where capmesh.videogen.v1 messages and the VideoGen domain meet.

Proto3 zeros mean "the model's default" for width, height, num_frames and fps; steps, guidance_scale
and seed are `optional`, so an explicit 0 reaches validation (and is refused where the rule says so).
"""

from __future__ import annotations

from capmesh.services.diffusion.request import common_fields
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.protoconv import chunk_to_proto, event_response, message_from, produced_file_to_proto
from capmesh.services.videogen.domain import VideoRequest, VideoResult
from capmesh.videogen.v1 import videogen_service_pb2 as pb


def request_from_proto(request: pb.StreamGenerateVideoRequest, image: bytes) -> VideoRequest:
    """`image` is the resolved bytes of `request.image` (inline or fetched by file id)."""
    return VideoRequest(
        **common_fields(request), image=image, num_frames=request.num_frames or None, fps=request.fps or None
    )


def response_from_event(event: object) -> pb.StreamGenerateVideoResponse:
    """One engine event (progress, a piece of the mp4, or the result) as a stream message."""
    return event_response(
        pb.StreamGenerateVideoResponse,
        event,
        {FileChunk: ("chunk", chunk_to_proto), VideoResult: ("result", result_to_proto)},
    )


def result_to_proto(result: VideoResult) -> pb.VideoResult:
    return message_from(pb.VideoResult, result, artifact=produced_file_to_proto(result.artifact))

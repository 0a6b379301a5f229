"""A typed helper over `capmesh.videogen.v1.VideoGenService` (image-to-video).

from capmesh.client import sync_channel
from capmesh.client.videogen import VideoGenClient

with sync_channel("127.0.0.1:50051") as channel:
    video = VideoGenClient(channel).generate(open("first.png", "rb").read(), "the cat walks away", num_frames=33)
    open("out.mp4", "wb").write(video.mp4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import grpc

from capmesh.client.streams import receive_file
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.videogen.v1 import videogen_service_pb2 as pb
from capmesh.videogen.v1 import videogen_service_pb2_grpc as pb_grpc

__all__ = ["GeneratedVideo", "VideoFields", "VideoGenClient", "video_request"]


@dataclass(frozen=True)
class GeneratedVideo:
    """The mp4 (checked against the size and sha256 of the result's artifact) and the server's description of it."""

    mp4: bytes
    result: pb.VideoResult


class VideoFields(TypedDict, total=False):
    """The request's fields besides the image and the prompt; one left out (or 0 / None) takes the model's default."""

    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: float
    steps: int | None
    guidance_scale: float | None
    seed: int | None
    model: str  # empty: the service's default


def video_request(
    image: bytes | artifact_pb2.Artifact, prompt: str = "", **fields: Unpack[VideoFields]
) -> pb.StreamGenerateVideoRequest:
    """The request message; `image` may be inline bytes."""
    if not isinstance(image, artifact_pb2.Artifact):
        image = artifact_pb2.Artifact(inline_data=image, size_bytes=len(image))
    return pb.StreamGenerateVideoRequest(image=image, prompt=prompt, **fields)


class VideoGenClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.VideoGenServiceStub(channel)

    def generate(
        self,
        image: bytes | artifact_pb2.Artifact,
        prompt: str = "",
        *,
        on_progress: Callable[[progress_pb2.Progress], None] | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **fields: Unpack[VideoFields],
    ) -> GeneratedVideo:
        """Streams the generation, reporting each Progress; raises a CapmeshClientError on failure.

        `fields` are those of `VideoFields` (width, height, num_frames, fps, steps, seed ...).
        """
        request = video_request(image, prompt, **fields)
        mp4, result = receive_file(
            self._stub.StreamGenerateVideo(request, timeout=timeout, metadata=metadata), "videogen", on_progress
        )
        return GeneratedVideo(mp4, result)

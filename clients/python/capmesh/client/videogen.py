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

import grpc

from capmesh.client.streams import StreamedFile, receive
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.videogen.v1 import videogen_service_pb2 as pb
from capmesh.videogen.v1 import videogen_service_pb2_grpc as pb_grpc

__all__ = ["GeneratedVideo", "VideoGenClient", "video_request"]


@dataclass(frozen=True)
class GeneratedVideo:
    """The mp4 (checked against the size and sha256 of the result's artifact) and the server's description of it."""

    mp4: bytes
    result: pb.VideoResult


def video_request(
    image: bytes | artifact_pb2.Artifact,
    prompt: str = "",
    *,
    negative_prompt: str = "",
    width: int = 0,
    height: int = 0,
    num_frames: int = 0,
    fps: float = 0.0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    model: str = "",
) -> pb.StreamGenerateVideoRequest:
    """The request message; 0 / None leave a field to the model's default. `image` may be inline bytes."""
    if not isinstance(image, artifact_pb2.Artifact):
        image = artifact_pb2.Artifact(inline_data=image, size_bytes=len(image))
    return pb.StreamGenerateVideoRequest(
        image=image,
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        model=model,
    )


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
        **fields,
    ) -> GeneratedVideo:
        """Streams the generation, reporting each Progress; raises a CapmeshClientError on failure.

        `fields` are those of `video_request` (width, height, num_frames, fps, steps, seed ...).
        """
        request = video_request(image, prompt, **fields)
        video = StreamedFile("videogen")
        result = receive(
            self._stub.StreamGenerateVideo(request, timeout=timeout, metadata=metadata),
            "videogen",
            lambda chunk: video.add(chunk.offset, chunk.data),
            on_progress,
        )
        return GeneratedVideo(video.verified(result.artifact), result)

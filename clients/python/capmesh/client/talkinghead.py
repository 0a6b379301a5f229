"""A typed helper over `capmesh.talkinghead.v1.TalkingHeadService`.

from capmesh.client import sync_channel
from capmesh.client.talkinghead import TalkingHeadClient

with sync_channel("127.0.0.1:50051") as channel:
    video = TalkingHeadClient(channel).generate(open("face.png", "rb").read(), open("hi.wav", "rb").read())
    open("out.mp4", "wb").write(video.mp4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from capmesh.client.streams import receive_file
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc as pb_grpc

__all__ = ["Input", "TalkingHeadClient", "TalkingHeadVideo", "artifact", "file_artifact"]

Input = bytes | artifact_pb2.Artifact  # inline bytes, or an Artifact (e.g. a gateway file id)


@dataclass(frozen=True)
class TalkingHeadVideo:
    """The mp4 (checked against the size and sha256 of the result's artifact) and the server's description of it."""

    mp4: bytes
    result: pb.TalkingHeadResult


def artifact(data: bytes, mime_type: str = "", name: str = "") -> artifact_pb2.Artifact:
    """An inline artifact: fine up to a few MiB; larger inputs go through the gateway's files."""
    return artifact_pb2.Artifact(inline_data=data, mime_type=mime_type, size_bytes=len(data), name=name)


def file_artifact(file_id: str) -> artifact_pb2.Artifact:
    """An artifact stored in the gateway's file service."""
    return artifact_pb2.Artifact(file_id=file_id)


class TalkingHeadClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.TalkingHeadServiceStub(channel)

    def generate(
        self,
        reference_image: Input,
        audio: Input | None,
        *,
        text: str = "",
        voice: str = "",
        language: str = "",
        fps: float = 0.0,
        num_frames: int = 0,
        seed: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        model: str = "",
        on_progress: Callable[[progress_pb2.Progress], None] | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> TalkingHeadVideo:
        """Streams the generation, reporting each Progress; raises a CapmeshClientError on failure.

        Give `audio`, or None and `text` (with `voice` and `language`) for the service to have the
        gateway's TTS capability speak it."""
        request = pb.StreamGenerateTalkingHeadRequest(
            reference_image=_as_artifact(reference_image),
            audio=None if audio is None else _as_artifact(audio),
            text=text,
            voice=voice,
            language=language,
            fps=fps,
            num_frames=num_frames,
            model=model,
            steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
        )
        mp4, result = receive_file(
            self._stub.StreamGenerateTalkingHead(request, timeout=timeout, metadata=metadata),
            "talkinghead",
            on_progress,
        )
        return TalkingHeadVideo(mp4, result)


def _as_artifact(value: Input) -> artifact_pb2.Artifact:
    return value if isinstance(value, artifact_pb2.Artifact) else artifact(value)

"""The one place where TalkingHead protos become domain objects and back."""

from __future__ import annotations

from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.chunks import ProducedFile
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.protoconv import chunked, message_from, produced_file_to_proto, progress_to_proto
from capmesh.services.talkinghead.domain import FaceBox, TalkingHeadRequest, TalkingHeadResult
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb

DEFAULT_STEPS = 25  # the proto's documented defaults for unset steps / guidance_scale
DEFAULT_GUIDANCE_SCALE = 2.5

Response = pb.StreamGenerateTalkingHeadResponse


def request_from_proto(
    request: pb.StreamGenerateTalkingHeadRequest, reference_image: bytes, audio: bytes
) -> TalkingHeadRequest:
    """The domain request, given the bytes the two artifacts resolved to."""
    return TalkingHeadRequest(
        reference_image=reference_image,
        audio=audio,
        steps=request.steps if request.HasField("steps") else DEFAULT_STEPS,
        guidance_scale=request.guidance_scale if request.HasField("guidance_scale") else DEFAULT_GUIDANCE_SCALE,
        seed=request.seed if request.HasField("seed") else None,
        num_frames=request.num_frames,
        fps=request.fps,
        model=request.model,
        width=request.width,
        height=request.height,
    )


def progress_response(update: ProgressUpdate) -> Response:
    return Response(progress=progress_to_proto(update))


def chunk_responses(result: TalkingHeadResult):
    """The mp4 as DataChunk messages of at most 1 MiB each."""
    for offset, piece in chunked(result.mp4):
        yield Response(chunk=artifact_pb2.DataChunk(data=piece, offset=offset))


def face_box_to_proto(box: FaceBox) -> pb.FaceBox:
    return pb.FaceBox(x=box.x, y=box.y, width=box.width, height=box.height)


def result_response(result: TalkingHeadResult) -> Response:
    return Response(
        result=message_from(
            pb.TalkingHeadResult,
            result,
            artifact=produced_file_to_proto(ProducedFile.of(result.mp4, result.mime_type)),
            face_box=face_box_to_proto(result.face_box),
            num_frames=result.frame_count,
            duration_seconds=result.duration_s,
            audio_duration_seconds=result.audio_duration_s,
        )
    )

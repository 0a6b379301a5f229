"""The one place where capmesh.tts.v1 messages and the TTS domain meet.

Proto3 defaults: an unset optional speed / volume / pitch is 1.0, an unset seed is "pick one",
AUDIO_FORMAT_UNSPECIFIED is WAV. Segment timings go out as the proto defines them: from the start
of a segment's speech to its end before the pause (the domain's `speech_end_s`).
"""

from __future__ import annotations

from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.protoconv import progress_to_proto
from capmesh.services.tts.domain import (
    AudioChunk,
    AudioFormat,
    SceneRequest,
    SceneResult,
    SceneSegment,
    SynthesisRequest,
    SynthesisResult,
    Voice,
)
from capmesh.tts.v1 import tts_service_pb2 as pb

_FORMATS_IN = {
    pb.AUDIO_FORMAT_UNSPECIFIED: AudioFormat.WAV,
    pb.AUDIO_FORMAT_WAV: AudioFormat.WAV,
    pb.AUDIO_FORMAT_PCM: AudioFormat.PCM,
    pb.AUDIO_FORMAT_MP3: AudioFormat.MP3,
    pb.AUDIO_FORMAT_OGG: AudioFormat.OGG,
    pb.AUDIO_FORMAT_FLAC: AudioFormat.FLAC,
}
_FORMATS_OUT = {fmt: value for value, fmt in _FORMATS_IN.items() if value != pb.AUDIO_FORMAT_UNSPECIFIED}


def audio_format_from_proto(value: pb.AudioFormat) -> AudioFormat:
    if value not in _FORMATS_IN:
        raise InvalidArgument.single("format", f"{value} is not an AudioFormat this server knows")
    return _FORMATS_IN[value]


def audio_format_to_proto(audio_format: AudioFormat) -> pb.AudioFormat:
    return _FORMATS_OUT[audio_format]


def _optional(message, name: str, default):
    return getattr(message, name) if message.HasField(name) else default


def synthesis_request_from_proto(request: pb.StreamSynthesizeRequest) -> SynthesisRequest:
    return SynthesisRequest(
        text=request.text,
        voice=request.voice,
        language=request.language,
        speed=_optional(request, "speed", 1.0),
        volume=_optional(request, "volume", 1.0),
        pitch=_optional(request, "pitch", 1.0),
        format=audio_format_from_proto(request.format),
        sample_rate=request.sample_rate,
        seed=_optional(request, "seed", None),
        model=request.model,
    )


def scene_request_from_proto(request: pb.StreamSynthesizeSceneRequest) -> SceneRequest:
    return SceneRequest(
        segments=tuple(
            SceneSegment(
                speaker=segment.speaker,
                text=segment.text,
                voice=segment.voice,
                pause_after_s=segment.pause_after_seconds,
                speed=_optional(segment, "speed", None),
            )
            for segment in request.segments
        ),
        language=request.language,
        format=audio_format_from_proto(request.format),
        sample_rate=request.sample_rate,
        seed=_optional(request, "seed", None),
        model=request.model,
    )


def chunk_to_proto(chunk: AudioChunk, *, scene: bool = False) -> artifact_pb2.DataChunk:
    """`part_index` is the sentence, or in a scene the segment (as the proto documents); one output: index 0."""
    return artifact_pb2.DataChunk(
        data=chunk.data, offset=chunk.offset, part_index=chunk.segment_index if scene else chunk.sentence_index
    )


def synthesis_result_to_proto(result: SynthesisResult | SceneResult, voice: str = "") -> pb.SynthesisResult:
    return pb.SynthesisResult(
        artifact=artifact_pb2.Artifact(mime_type=result.mime_type, size_bytes=result.total_bytes),
        format=audio_format_to_proto(result.format),
        sample_rate=result.sample_rate,
        duration_seconds=result.duration_s,
        sentence_count=result.sentences,
        voice=voice,
        seed=result.seed,
        model=result.model,
        random_weights=result.random_weights,
    )


def scene_result_to_proto(result: SceneResult) -> pb.SceneResult:
    return pb.SceneResult(
        audio=synthesis_result_to_proto(result),
        timings=[
            pb.SegmentTiming(index=t.index, speaker=t.speaker, start_seconds=t.start_s, end_seconds=t.speech_end_s)
            for t in result.segments
        ],
    )


def synthesize_event_to_proto(item: object) -> pb.StreamSynthesizeResponse:
    if isinstance(item, ProgressUpdate):
        return pb.StreamSynthesizeResponse(progress=progress_to_proto(item))
    if isinstance(item, AudioChunk):
        return pb.StreamSynthesizeResponse(chunk=chunk_to_proto(item))
    if isinstance(item, SynthesisResult):
        return pb.StreamSynthesizeResponse(result=synthesis_result_to_proto(item, item.voice))
    raise TypeError(f"the TTS engine emitted an unexpected {type(item).__name__}")


def scene_event_to_proto(item: object) -> pb.StreamSynthesizeSceneResponse:
    if isinstance(item, ProgressUpdate):
        return pb.StreamSynthesizeSceneResponse(progress=progress_to_proto(item))
    if isinstance(item, AudioChunk):
        return pb.StreamSynthesizeSceneResponse(chunk=chunk_to_proto(item, scene=True))
    if isinstance(item, SceneResult):
        return pb.StreamSynthesizeSceneResponse(result=scene_result_to_proto(item))
    raise TypeError(f"the TTS engine emitted an unexpected {type(item).__name__}")


def voices_to_proto(voices: list[Voice]) -> pb.ListVoicesResponse:
    return pb.ListVoicesResponse(
        voices=[
            pb.Voice(id=v.id, name=v.name, languages=list(v.languages), gender=v.gender)
            for v in sorted(voices, key=lambda v: v.id)
        ]
    )

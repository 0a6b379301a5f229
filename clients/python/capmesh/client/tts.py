"""A typed helper over `capmesh.tts.v1.TtsService`.

    from capmesh.client import sync_channel
    from capmesh.client.tts import SceneSegment, TtsClient

    with sync_channel("127.0.0.1:50051") as channel:
        tts = TtsClient(channel)
        speech = tts.synthesize("Hello there. How are you?", voice="en-us", audio_format="mp3")
        open("hello.mp3", "wb").write(speech.audio)
        scene = tts.synthesize_scene(
            [SceneSegment(speaker="Ann", text="Hi Bob."), SceneSegment(speaker="Bob", text="Hi!", voice="en-gb")]
        )
        for timing in scene.result.timings:
            print(timing.speaker, timing.start_seconds, timing.end_seconds)

Streamed WAV arrives with the streaming header (sizes 0xFFFFFFFF); `Speech.audio` is the whole
file with the exact sizes patched in, so it is a standard WAV.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import grpc

from capmesh.client.errors import from_rpc_error
from capmesh.client.streams import receive_file
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.tts.v1 import tts_service_pb2 as pb
from capmesh.tts.v1 import tts_service_pb2_grpc as pb_grpc

__all__ = ["AUDIO_FORMATS", "Scene", "SceneSegment", "Speech", "SynthesisOptions", "TtsClient", "finalize_wav"]

# A scene's line is the protocol's own message: `speaker` is a label for subtitles, `voice` a voice
# id, and `speed` left unset is the normal rate.
SceneSegment = pb.SceneSegment

AUDIO_FORMATS = {
    "wav": pb.AUDIO_FORMAT_WAV,
    "pcm": pb.AUDIO_FORMAT_PCM,
    "mp3": pb.AUDIO_FORMAT_MP3,
    "ogg": pb.AUDIO_FORMAT_OGG,
    "flac": pb.AUDIO_FORMAT_FLAC,
}

ProgressCallback = Callable[[progress_pb2.Progress], None]
ChunkCallback = Callable[[artifact_pb2.DataChunk], None]


@dataclass(frozen=True)
class Speech:
    """The whole audio file and the server's description of it."""

    audio: bytes
    result: pb.SynthesisResult


@dataclass(frozen=True)
class Scene:
    """The whole track, its description (`result.audio`) and each segment's timing (`result.timings`)."""

    audio: bytes
    result: pb.SceneResult


class SynthesisOptions(TypedDict, total=False):
    """The keywords both synthesis calls take: how the audio is encoded and made, and the call's options."""

    audio_format: str  # wav (the default), pcm, mp3, ogg or flac
    sample_rate: int  # 0: the model's own rate
    seed: int | None
    model: str  # empty: the service's default
    on_progress: ProgressCallback | None
    on_chunk: ChunkCallback | None  # sees each audio chunk as it arrives (for playback)
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None


class TtsClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.TtsServiceStub(channel)

    def synthesize(
        self,
        text: str,
        *,
        voice: str = "",
        language: str = "",
        speed: float | None = None,
        volume: float | None = None,
        pitch: float | None = None,
        **options: Unpack[SynthesisOptions],
    ) -> Speech:
        """Streams the synthesis of `text` as one audio file."""
        fields = dict(text=text, voice=voice, language=language, speed=speed, volume=volume, pitch=pitch)
        audio, result = self._stream(self._stub.StreamSynthesize, pb.StreamSynthesizeRequest, fields, options)
        return Speech(_finished(audio, result), result)

    def synthesize_scene(
        self, segments: Iterable[SceneSegment], *, language: str = "", **options: Unpack[SynthesisOptions]
    ) -> Scene:
        """Streams the scene as one audio track, each segment in its own voice; the result times every one."""
        audio, result = self._stream(
            self._stub.StreamSynthesizeScene,
            pb.StreamSynthesizeSceneRequest,
            dict(segments=list(segments), language=language),
            options,
            artifact_of=lambda scene: scene.audio.artifact,
        )
        return Scene(_finished(audio, result.audio), result)

    def _stream(
        self,
        rpc: Callable[..., Any],
        request_type: Callable[..., Any],
        fields: dict[str, Any],
        options: SynthesisOptions,
        artifact_of: Callable[[Any], artifact_pb2.Artifact] = lambda result: result.artifact,
    ) -> tuple[bytes, Any]:
        """Sends the request made of `fields` and the options both calls share; (the audio, the result)."""
        request = request_type(
            **fields,
            format=_format(options.get("audio_format", "wav")),
            sample_rate=options.get("sample_rate", 0),
            seed=options.get("seed"),
            model=options.get("model", ""),
        )
        responses = rpc(request, timeout=options.get("timeout"), metadata=options.get("metadata"))
        return receive_file(responses, "tts", options.get("on_progress"), options.get("on_chunk"), artifact_of)

    def list_voices(self, language: str = "", *, timeout: float | None = None) -> list[pb.Voice]:
        try:
            return list(self._stub.ListVoices(pb.ListVoicesRequest(language=language), timeout=timeout).voices)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


def finalize_wav(data: bytes) -> bytes:
    """Writes the exact RIFF and data sizes into a streamed 44-byte-header WAV."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[36:40] != b"data":
        return data
    payload = len(data) - 44
    return data[:4] + struct.pack("<I", 36 + payload) + data[8:40] + struct.pack("<I", payload) + data[44:]


def _format(name: str) -> pb.AudioFormat:
    try:
        return AUDIO_FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown audio format {name!r}; one of {', '.join(AUDIO_FORMATS)}") from None


def _finished(audio: bytes, result: pb.SynthesisResult) -> bytes:
    """The audio file as it should be saved: a streamed WAV gets its exact sizes written in."""
    return finalize_wav(audio) if result.format == pb.AUDIO_FORMAT_WAV else audio

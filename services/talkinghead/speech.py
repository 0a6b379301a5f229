"""Speech for a request that gives text: `capmesh.tts.v1.TtsService.StreamSynthesize` through the gateway.

The talking head asks the TTS capability rather than speaking itself, as the flow capmesh replaces
chained the two services: the gateway routes the call to a healthy TTS backend (or fails over), and
the TTS service's own progress shows up as this call's `synthesizing` stage. Failures come back as
domain errors with the TTS service's code and reason; its field violations name `text`, `voice` and
`language`, which are this request's field names too. Cancelling the task that reads `speak`
cancels the TTS call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc

from capmesh.services.runtime.capability_calls import CapabilityClient
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.settings import ServerSettings
from capmesh.tts.v1 import tts_service_pb2 as tts_pb
from capmesh.tts.v1 import tts_service_pb2_grpc as tts_grpc


@dataclass(frozen=True)
class Speech:
    """The spoken text as WAV bytes."""

    wav: bytes
    duration_s: float
    voice: str


class GatewaySpeech(CapabilityClient):
    def __init__(self, settings: ServerSettings) -> None:
        no_gateway = (
            "talkinghead speaks text through the TTS capability of a gateway, and none is set (--gateway); "
            "send audio instead"
        )
        super().__init__(settings, "TTS", "text", no_gateway)

    async def speak(
        self, text: str, voice: str, language: str, stage: str, timeout_s: float | None
    ) -> AsyncGenerator[ProgressUpdate | Speech, None]:
        """Yields the TTS call's progress as `stage` updates, then the Speech."""
        request = tts_pb.StreamSynthesizeRequest(
            text=text, voice=voice, language=language, format=tts_pb.AUDIO_FORMAT_WAV
        )

        def start(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> Any:
            return tts_grpc.TtsServiceStub(channel).StreamSynthesize(request, timeout=timeout_s, metadata=metadata)

        audio = bytearray()
        async with self.streaming(start) as call:
            async for message in call:
                kind = message.WhichOneof("event")
                if kind == "progress":
                    progress = message.progress
                    note = f"text to speech: {progress.message}" if progress.message else "text to speech"
                    yield ProgressUpdate(stage, progress.percent, note, queue_position=progress.queue_position)
                elif kind == "chunk":
                    audio += message.chunk.data
                elif kind == "result":
                    result = message.result
                    yield Speech(bytes(audio), result.duration_seconds, result.voice)
                    return
        raise self.ended_without_result()

"""The TTS engine: sentence-by-sentence synthesis and scenes, on top of a speech backend.

Engines: `espeak` (espeak-ng, the default), `transformers` (VITS / MMS-TTS) and `openai` (an
OpenAI-compatible /audio/speech API), picked by the `engine` setting (`make_engine`).

Streaming: the text is split into sentences; each one is rendered, resampled to the output rate,
encoded and emitted as AudioChunk(s) at once, followed by a ProgressUpdate (sentences done /
total). Cancellation is checked before every sentence, so a cancelled call stops before the
next sentence is rendered. Chunks concatenated in order form one valid file (see encoders.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import FailedPrecondition
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.runtime.progress import Emit, ProgressUpdate, StepTimer
from capmesh.services.runtime.settings import env_name
from capmesh.services.tts.audio import Pcm, apply_gain, resample
from capmesh.services.tts.backend import RenderOptions, SpeechBackend
from capmesh.services.tts.config import ENV_PREFIX, TtsSettings
from capmesh.services.tts.domain import (
    AudioChunk,
    AudioFormat,
    SceneRequest,
    SceneResult,
    SegmentTiming,
    SynthesisRequest,
    SynthesisResult,
    Voice,
)
from capmesh.services.tts.encoders import StreamEncoder, available_formats, make_encoder, nearest_supported_rate
from capmesh.services.tts.sentences import split_sentences
from capmesh.services.tts.validation import Abilities, validate_scene, validate_synthesis

log = structlog.get_logger("capmesh.tts")

STAGE_LOADING = "loading_model"
STAGE_SYNTHESIZING = "synthesizing"


class TrackWriter:
    """Encodes PCM blocks into the output file and emits the bytes as numbered chunks.

    Counts samples at the output rate, which is what scene timings are measured in.
    """

    def __init__(self, encoder: StreamEncoder, emit: Emit, chunk_bytes: int) -> None:
        self.sample_rate = encoder.sample_rate
        self.samples = 0
        self.total_bytes = 0
        self._encoder = encoder
        self._emit = emit
        self._chunk_bytes = chunk_bytes
        self._sequence = 0

    def write(self, pcm: Pcm, sentence_index: int, segment_index: int = 0) -> None:
        self.samples += len(pcm.samples)
        self._send(self._encoder.encode(pcm), sentence_index, segment_index)

    def finish(self, sentence_index: int, segment_index: int = 0) -> None:
        self._send(self._encoder.finish(), sentence_index, segment_index)

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate

    def _send(self, data: bytes, sentence_index: int, segment_index: int) -> None:
        for start in range(0, len(data), self._chunk_bytes):
            piece = data[start : start + self._chunk_bytes]
            self._emit(AudioChunk(piece, self._sequence, self.total_bytes, sentence_index, segment_index))
            self._sequence += 1
            self.total_bytes += len(piece)


@dataclass(frozen=True)
class _Line:
    """One sentence to render, with where it belongs."""

    text: str
    voice: str
    speed: float
    segment_index: int


class TtsEngine:
    def __init__(self, backend: SpeechBackend, settings: TtsSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.abilities = Abilities(
            speed_range=backend.speed_range,
            supports_pitch=backend.supports_pitch,
            engine=backend.name,
            formats=available_formats(),
        )

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def models(self) -> ModelManager:
        return self.backend.models

    def close(self) -> None:
        self.backend.close()

    # -- voices ----------------------------------------------------------------------------------
    def list_voices(self, language: str = "") -> list[Voice]:
        catalog = self.backend.catalog()
        return catalog.matching(language) if language else list(catalog.voices)

    def _check_resolved(self, voices: list[str]) -> None:
        """Requested voices were validated; one that is still unknown is the configured default."""
        catalog = self.backend.catalog()
        for voice in voices:
            if not catalog.is_valid(voice):
                raise FailedPrecondition(
                    f"setting {env_name(ENV_PREFIX, 'default_voice')}={voice!r} is not a voice of the "
                    f"{self.backend.name} engine; {catalog.describe_valid(voice)}",
                    reason="BAD_DEFAULT_VOICE",
                )

    # -- synthesis -------------------------------------------------------------------------------
    def synthesize(self, request: SynthesisRequest, cancel: CancelToken, emit: Emit) -> SynthesisResult:
        """Streams the audio of `request.text` sentence by sentence; returns the summary."""
        model_name = self.models.resolve(request.model)
        with self._model(model_name) as (model, validated):
            voice = validate_synthesis(
                request, self.settings, self.abilities, self.backend.catalog(), self.backend.default_voice()
            )
            self._check_resolved([voice])
            validated(emit)
            lines = [
                _Line(s, voice, request.speed, 0)
                for s in split_sentences(request.text, self.settings.max_sentence_chars)
            ]
            seed = _seed(request.seed)
            writer = self._render(model, lines, request, seed, cancel, emit, pauses={})
        log.info(
            "tts.synthesized",
            engine=self.backend.name,
            voice=voice,
            sentences=len(lines),
            seconds=round(writer.duration_s, 3),
            format=request.format.value,
        )
        return _described(SynthesisResult, request.format, writer, len(lines), model_name, model, seed, voice=voice)

    def synthesize_scene(self, request: SceneRequest, cancel: CancelToken, emit: Emit) -> SceneResult:
        """Renders the segments in order into one track; returns each segment's timing."""
        model_name = self.models.resolve(request.model)
        with self._model(model_name) as (model, validated):
            voices = validate_scene(
                request, self.settings, self.abilities, self.backend.catalog(), self.backend.default_voice()
            )
            self._check_resolved(voices)
            validated(emit)
            lines = [
                _Line(sentence, voices[index], request.speed if segment.speed is None else segment.speed, index)
                for index, segment in enumerate(request.segments)
                for sentence in split_sentences(segment.text, self.settings.max_sentence_chars)
            ]
            pauses = {i: s.pause_after_s for i, s in enumerate(request.segments)}
            seed = _seed(request.seed)
            marks: dict[int, tuple[int, int, int]] = {}  # segment -> (start, speech end, end) in samples
            writer = self._render(
                model, lines, request, seed, cancel, emit, pauses=pauses, marks=marks, segments=len(request.segments)
            )
        rate = writer.sample_rate
        timings = tuple(
            SegmentTiming(
                index, segment.speaker, marks[index][0] / rate, marks[index][2] / rate, marks[index][1] / rate
            )
            for index, segment in enumerate(request.segments)
        )
        return _described(
            SceneResult, request.format, writer, len(lines), model_name, model, seed, voice="", segments=timings
        )

    # -- shared pipeline -------------------------------------------------------------------------
    @contextmanager
    def _model(self, name: str) -> Iterator[tuple[LoadedModel, Callable[[Emit], None]]]:
        """The model (loaded if need be: a VITS model's voices, which validation checks, live in it)
        and `validated(emit)`, which reports a load that happened. The report waits for the
        validation so that an invalid request ends the call before its first message: the gateway
        decides the HTTP status (400) on that message."""
        loading = name not in self.models.loaded_models()

        def validated(emit: Emit) -> None:
            if loading:
                emit(ProgressUpdate(stage=STAGE_LOADING, percent=100.0, message=f"loaded {name}"))

        with self.models.use(name) as model:
            yield model, validated

    def _output_rate(self, model: LoadedModel, audio_format: AudioFormat, requested: int) -> int:
        if requested:
            return requested  # validation checked that the format carries it
        base = self.settings.default_sample_rate or self.backend.native_sample_rate(model)
        return nearest_supported_rate(audio_format, base)

    def _render(
        self,
        model: LoadedModel,
        lines: list[_Line],
        request: SynthesisRequest | SceneRequest,
        seed: int,
        cancel: CancelToken,
        emit: Emit,
        *,
        pauses: dict[int, float],
        marks: dict[int, tuple[int, int, int]] | None = None,
        segments: int = 0,
    ) -> TrackWriter:
        """Renders `lines` in order into one track; for scenes (`segments` > 0) progress steps count
        finished segments, otherwise sentences; the percentage always follows sentences."""
        encoder = make_encoder(request.format, self._output_rate(model, request.format, request.sample_rate))
        try:
            writer = TrackWriter(encoder, emit, self.settings.chunk_bytes)
            timer = StepTimer(len(lines))
            segment_start = 0
            for index, line in enumerate(lines):
                cancel.raise_if_cancelled()
                options = RenderOptions(line.speed, request.pitch, request.volume, (seed + index) % 2**63)
                pcm = self.backend.render(model, line.text, line.voice, options, cancel)
                if not self.backend.renders_volume:
                    pcm = apply_gain(pcm, request.volume)
                writer.write(resample(pcm, writer.sample_rate), index, line.segment_index)
                ends_segment = index + 1 == len(lines) or lines[index + 1].segment_index != line.segment_index
                if ends_segment:
                    speech_end = writer.samples
                    pause = pauses.get(line.segment_index, 0.0)
                    if pause > 0:
                        writer.write(Pcm.silence(pause, writer.sample_rate), index, line.segment_index)
                    if marks is not None:
                        marks[line.segment_index] = (segment_start, speech_end, writer.samples)
                    segment_start = writer.samples
                finished_segments = line.segment_index + 1 if ends_segment else line.segment_index
                emit(_progress(index + 1, len(lines), finished_segments, segments, timer))
            writer.finish(len(lines) - 1, lines[-1].segment_index)  # validation: at least one line
            return writer
        finally:
            encoder.close()


def _progress(done: int, total: int, finished_segments: int, segments: int, timer: StepTimer) -> ProgressUpdate:
    message = f"sentence {done}/{total}"
    step, steps = done, total
    if segments:
        message = f"{finished_segments}/{segments} segments, {message}"
        step, steps = finished_segments, segments
    return ProgressUpdate(
        stage=STAGE_SYNTHESIZING,
        percent=100.0 * done / total,
        message=message,
        step=step,
        total_steps=steps,
        eta_seconds=timer.eta_after(done),
    )


ResultT = TypeVar("ResultT", bound=SynthesisResult)


def _described(
    kind: type[ResultT],
    audio_format: AudioFormat,
    writer: TrackWriter,
    sentences: int,
    model_name: str,
    model: LoadedModel,
    seed: int,
    **extra: Any,
) -> ResultT:
    """The result of either call: the file the writer wrote, the model and seed, and `extra` (voice, timings)."""
    return kind(
        format=audio_format,
        sample_rate=writer.sample_rate,
        duration_s=writer.duration_s,
        total_bytes=writer.total_bytes,
        sentences=sentences,
        model=model_name,
        seed=seed,
        random_weights=model.random_weights,
        **extra,
    )


def _seed(requested: int | None) -> int:
    return requested if requested is not None else random.randrange(2**31)


def make_engine(settings: TtsSettings) -> TtsEngine:
    """The engine the `engine` setting names."""
    if settings.engine == "espeak":
        from capmesh.services.tts.espeak import EspeakBackend

        backend: SpeechBackend = EspeakBackend(settings)
    elif settings.engine == "transformers":
        from capmesh.services.tts.vits import VitsBackend

        backend = VitsBackend(settings)
    else:
        from capmesh.services.tts.remote import RemoteSpeechBackend

        backend = RemoteSpeechBackend(settings)
    return TtsEngine(backend, settings)

"""The TTS capability's domain: plain dataclasses, no protobuf (convert.py maps them to the protos)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AudioFormat(str, enum.Enum):
    """Output containers; mp3/ogg/flac exist only where PyAV has an encoder for them."""

    WAV = "wav"
    PCM = "pcm"  # raw signed 16-bit little-endian mono samples, no header
    MP3 = "mp3"
    OGG = "ogg"  # Opus in Ogg
    FLAC = "flac"

    @property
    def mime_type(self) -> str:
        return _MIME_TYPES[self]


_MIME_TYPES = {
    AudioFormat.WAV: "audio/wav",
    AudioFormat.PCM: "audio/L16",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.OGG: "audio/ogg",
    AudioFormat.FLAC: "audio/flac",
}


@dataclass(frozen=True)
class SynthesisRequest:
    """Text to speak. Zero / empty values mean "the service default" (as proto3 defaults do)."""

    text: str
    voice: str = ""  # "" picks the voice for `language`, else the service's default voice
    language: str = ""
    speed: float = 1.0  # 1.0 is the voice's normal rate
    volume: float = 1.0  # linear gain; 1.0 leaves the level as the engine renders it
    pitch: float = 1.0  # relative; only engines that can shift pitch accept values other than 1.0
    format: AudioFormat = AudioFormat.WAV
    sample_rate: int = 0  # 0: the service default, else the engine's native rate
    seed: int | None = None  # None: a random seed, reported in the result
    model: str = ""  # "" is the served model


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the encoded output; concatenating every chunk in `sequence` order gives the file."""

    data: bytes
    sequence: int
    offset: int  # the position of the piece's first byte in the file
    sentence_index: int  # the sentence (counted over the whole request) whose audio this holds
    segment_index: int = 0  # scenes: the segment being rendered; 0 for plain synthesis


@dataclass(frozen=True)
class SynthesisResult:
    """What one synthesis made: the audio file's encoding and length, and the voice, model and seed."""

    format: AudioFormat
    sample_rate: int
    duration_s: float
    total_bytes: int
    sentences: int
    voice: str
    model: str
    seed: int
    random_weights: bool = False  # True when the model is a project-built random checkpoint

    @property
    def mime_type(self) -> str:
        return self.format.mime_type


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    languages: tuple[str, ...]
    gender: str = ""  # "male", "female", or "" when the engine does not say


@dataclass(frozen=True)
class SceneSegment:
    speaker: str  # a label for subtitles ("Alice"); not a voice
    text: str
    voice: str = ""  # "" uses the scene's default voice
    pause_after_s: float = 0.0  # silence inserted after this segment
    speed: float | None = None  # None: the scene's speed


@dataclass(frozen=True)
class SceneRequest:
    segments: tuple[SceneSegment, ...]
    language: str = ""
    speed: float = 1.0
    volume: float = 1.0
    pitch: float = 1.0
    format: AudioFormat = AudioFormat.WAV
    sample_rate: int = 0
    seed: int | None = None
    model: str = ""


@dataclass(frozen=True)
class SegmentTiming:
    """Where one segment lies in the scene's track.

    Timings are contiguous: `end_s` includes the segment's pause, so each segment starts where the
    previous one ended and the last one ends at the track's duration. `speech_end_s` is where the
    speech itself stops, for subtitles that should disappear during the pause.
    """

    index: int
    speaker: str
    start_s: float
    end_s: float
    speech_end_s: float


@dataclass(frozen=True)
class SceneResult(SynthesisResult):
    """The scene's track, described as a synthesis (its `voice` is empty: each segment has its own), and
    each segment's timing."""

    segments: tuple[SegmentTiming, ...] = ()

from capmesh.common.v1 import artifact_pb2 as _artifact_pb2
from capmesh.common.v1 import progress_pb2 as _progress_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    AUDIO_FORMAT_WAV: _ClassVar[AudioFormat]
    AUDIO_FORMAT_PCM: _ClassVar[AudioFormat]
    AUDIO_FORMAT_MP3: _ClassVar[AudioFormat]
    AUDIO_FORMAT_OGG: _ClassVar[AudioFormat]
    AUDIO_FORMAT_FLAC: _ClassVar[AudioFormat]
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
AUDIO_FORMAT_WAV: AudioFormat
AUDIO_FORMAT_PCM: AudioFormat
AUDIO_FORMAT_MP3: AudioFormat
AUDIO_FORMAT_OGG: AudioFormat
AUDIO_FORMAT_FLAC: AudioFormat

class StreamSynthesizeRequest(_message.Message):
    __slots__ = ("text", "voice", "language", "speed", "volume", "pitch", "format", "sample_rate", "seed", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    voice: str
    language: str
    speed: float
    volume: float
    pitch: float
    format: AudioFormat
    sample_rate: int
    seed: int
    model: str
    def __init__(self, text: _Optional[str] = ..., voice: _Optional[str] = ..., language: _Optional[str] = ..., speed: _Optional[float] = ..., volume: _Optional[float] = ..., pitch: _Optional[float] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., sample_rate: _Optional[int] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class SynthesisResult(_message.Message):
    __slots__ = ("artifact", "format", "sample_rate", "duration_seconds", "sentence_count", "voice", "seed", "model", "random_weights")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    format: AudioFormat
    sample_rate: int
    duration_seconds: float
    sentence_count: int
    voice: str
    seed: int
    model: str
    random_weights: bool
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., sample_rate: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., sentence_count: _Optional[int] = ..., voice: _Optional[str] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., random_weights: _Optional[bool] = ...) -> None: ...

class StreamSynthesizeResponse(_message.Message):
    __slots__ = ("progress", "chunk", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _progress_pb2.Progress
    chunk: _artifact_pb2.DataChunk
    result: SynthesisResult
    def __init__(self, progress: _Optional[_Union[_progress_pb2.Progress, _Mapping]] = ..., chunk: _Optional[_Union[_artifact_pb2.DataChunk, _Mapping]] = ..., result: _Optional[_Union[SynthesisResult, _Mapping]] = ...) -> None: ...

class SceneSegment(_message.Message):
    __slots__ = ("speaker", "text", "voice", "pause_after_seconds", "speed")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    speaker: str
    text: str
    voice: str
    pause_after_seconds: float
    speed: float
    def __init__(self, speaker: _Optional[str] = ..., text: _Optional[str] = ..., voice: _Optional[str] = ..., pause_after_seconds: _Optional[float] = ..., speed: _Optional[float] = ...) -> None: ...

class StreamSynthesizeSceneRequest(_message.Message):
    __slots__ = ("segments", "format", "sample_rate", "language", "seed", "model")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[SceneSegment]
    format: AudioFormat
    sample_rate: int
    language: str
    seed: int
    model: str
    def __init__(self, segments: _Optional[_Iterable[_Union[SceneSegment, _Mapping]]] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., sample_rate: _Optional[int] = ..., language: _Optional[str] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class SegmentTiming(_message.Message):
    __slots__ = ("index", "speaker", "start_seconds", "end_seconds")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    speaker: str
    start_seconds: float
    end_seconds: float
    def __init__(self, index: _Optional[int] = ..., speaker: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class SceneResult(_message.Message):
    __slots__ = ("audio", "timings")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    audio: SynthesisResult
    timings: _containers.RepeatedCompositeFieldContainer[SegmentTiming]
    def __init__(self, audio: _Optional[_Union[SynthesisResult, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[SegmentTiming, _Mapping]]] = ...) -> None: ...

class StreamSynthesizeSceneResponse(_message.Message):
    __slots__ = ("progress", "chunk", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _progress_pb2.Progress
    chunk: _artifact_pb2.DataChunk
    result: SceneResult
    def __init__(self, progress: _Optional[_Union[_progress_pb2.Progress, _Mapping]] = ..., chunk: _Optional[_Union[_artifact_pb2.DataChunk, _Mapping]] = ..., result: _Optional[_Union[SceneResult, _Mapping]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ("language",)
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    language: str
    def __init__(self, language: _Optional[str] = ...) -> None: ...

class Voice(_message.Message):
    __slots__ = ("id", "name", "languages", "gender")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    gender: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., gender: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...

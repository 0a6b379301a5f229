from capmesh.common.v1 import artifact_pb2 as _artifact_pb2
from capmesh.common.v1 import progress_pb2 as _progress_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamGenerateTalkingHeadRequest(_message.Message):
    __slots__ = ("reference_image", "audio", "steps", "guidance_scale", "seed", "num_frames", "fps", "model", "width", "height", "text", "voice", "language")
    REFERENCE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    reference_image: _artifact_pb2.Artifact
    audio: _artifact_pb2.Artifact
    steps: int
    guidance_scale: float
    seed: int
    num_frames: int
    fps: float
    model: str
    width: int
    height: int
    text: str
    voice: str
    language: str
    def __init__(self, reference_image: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., audio: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., model: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., text: _Optional[str] = ..., voice: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class TalkingHeadResult(_message.Message):
    __slots__ = ("artifact", "num_frames", "fps", "width", "height", "duration_seconds", "face_box", "faces_found", "seed", "model", "audio_duration_seconds")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    FACES_FOUND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    num_frames: int
    fps: float
    width: int
    height: int
    duration_seconds: float
    face_box: FaceBox
    faces_found: int
    seed: int
    model: str
    audio_duration_seconds: float
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., face_box: _Optional[_Union[FaceBox, _Mapping]] = ..., faces_found: _Optional[int] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., audio_duration_seconds: _Optional[float] = ...) -> None: ...

class StreamGenerateTalkingHeadResponse(_message.Message):
    __slots__ = ("progress", "chunk", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _progress_pb2.Progress
    chunk: _artifact_pb2.DataChunk
    result: TalkingHeadResult
    def __init__(self, progress: _Optional[_Union[_progress_pb2.Progress, _Mapping]] = ..., chunk: _Optional[_Union[_artifact_pb2.DataChunk, _Mapping]] = ..., result: _Optional[_Union[TalkingHeadResult, _Mapping]] = ...) -> None: ...

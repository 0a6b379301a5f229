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

class DocumentFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOCUMENT_FORMAT_UNSPECIFIED: _ClassVar[DocumentFormat]
    DOCUMENT_FORMAT_MARKDOWN: _ClassVar[DocumentFormat]
    DOCUMENT_FORMAT_DOCX: _ClassVar[DocumentFormat]
DOCUMENT_FORMAT_UNSPECIFIED: DocumentFormat
DOCUMENT_FORMAT_MARKDOWN: DocumentFormat
DOCUMENT_FORMAT_DOCX: DocumentFormat

class OutlineNode(_message.Message):
    __slots__ = ("title", "summary", "children")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    title: str
    summary: str
    children: _containers.RepeatedCompositeFieldContainer[OutlineNode]
    def __init__(self, title: _Optional[str] = ..., summary: _Optional[str] = ..., children: _Optional[_Iterable[_Union[OutlineNode, _Mapping]]] = ...) -> None: ...

class Outline(_message.Message):
    __slots__ = ("title", "nodes")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    title: str
    nodes: _containers.RepeatedCompositeFieldContainer[OutlineNode]
    def __init__(self, title: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[OutlineNode, _Mapping]]] = ...) -> None: ...

class StreamGenerateOutlineRequest(_message.Message):
    __slots__ = ("query", "context_files", "language", "max_sections", "max_depth", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FILES_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_SECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    context_files: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    language: str
    max_sections: int
    max_depth: int
    model: str
    def __init__(self, query: _Optional[str] = ..., context_files: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., language: _Optional[str] = ..., max_sections: _Optional[int] = ..., max_depth: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class OutlineResult(_message.Message):
    __slots__ = ("outline", "model", "attempts")
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    outline: Outline
    model: str
    attempts: int
    def __init__(self, outline: _Optional[_Union[Outline, _Mapping]] = ..., model: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class StreamGenerateOutlineResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _progress_pb2.Progress
    result: OutlineResult
    def __init__(self, progress: _Optional[_Union[_progress_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[OutlineResult, _Mapping]] = ...) -> None: ...

class StreamGenerateDocumentRequest(_message.Message):
    __slots__ = ("outline", "context_files", "format", "model", "max_concurrent_sections", "language")
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FILES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_SECTIONS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    outline: Outline
    context_files: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    format: DocumentFormat
    model: str
    max_concurrent_sections: int
    language: str
    def __init__(self, outline: _Optional[_Union[Outline, _Mapping]] = ..., context_files: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., format: _Optional[_Union[DocumentFormat, str]] = ..., model: _Optional[str] = ..., max_concurrent_sections: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class SectionStats(_message.Message):
    __slots__ = ("index", "title", "characters", "tokens", "seconds", "attempts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    title: str
    characters: int
    tokens: int
    seconds: float
    attempts: int
    def __init__(self, index: _Optional[int] = ..., title: _Optional[str] = ..., characters: _Optional[int] = ..., tokens: _Optional[int] = ..., seconds: _Optional[float] = ..., attempts: _Optional[int] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("number", "name", "sections")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    number: int
    name: str
    sections: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, number: _Optional[int] = ..., name: _Optional[str] = ..., sections: _Optional[_Iterable[int]] = ...) -> None: ...

class DocumentResult(_message.Message):
    __slots__ = ("document", "sections", "references", "model", "format")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    document: _artifact_pb2.Artifact
    sections: _containers.RepeatedCompositeFieldContainer[SectionStats]
    references: _containers.RepeatedCompositeFieldContainer[Reference]
    model: str
    format: DocumentFormat
    def __init__(self, document: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., sections: _Optional[_Iterable[_Union[SectionStats, _Mapping]]] = ..., references: _Optional[_Iterable[_Union[Reference, _Mapping]]] = ..., model: _Optional[str] = ..., format: _Optional[_Union[DocumentFormat, str]] = ...) -> None: ...

class StreamGenerateDocumentResponse(_message.Message):
    __slots__ = ("progress", "chunk", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _progress_pb2.Progress
    chunk: _artifact_pb2.DataChunk
    result: DocumentResult
    def __init__(self, progress: _Optional[_Union[_progress_pb2.Progress, _Mapping]] = ..., chunk: _Optional[_Union[_artifact_pb2.DataChunk, _Mapping]] = ..., result: _Optional[_Union[DocumentResult, _Mapping]] = ...) -> None: ...

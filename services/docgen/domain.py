"""DocGen's domain: outlines, requests, the events the engine streams and its results (no protos)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

MARKDOWN_MIME = "text/markdown"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class DocumentFormat(str, Enum):
    MARKDOWN = "markdown"
    DOCX = "docx"

    @property
    def mime_type(self) -> str:
        return DOCX_MIME if self is DocumentFormat.DOCX else MARKDOWN_MIME

    @property
    def extension(self) -> str:
        return "docx" if self is DocumentFormat.DOCX else "md"


@dataclass(frozen=True)
class OutlineNode:
    title: str
    summary: str = ""
    children: tuple[OutlineNode, ...] = ()


@dataclass(frozen=True)
class Outline:
    title: str
    nodes: tuple[OutlineNode, ...]


@dataclass(frozen=True)
class ContextFile:
    """A context file's display name and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class OutlineRequest:
    query: str
    context: tuple[ContextFile, ...] = ()
    language: str = ""
    max_sections: int = 0  # 0: the service's default
    max_depth: int = 0  # 0: the service's default
    model: str = ""


@dataclass(frozen=True)
class DocumentRequest:
    outline: Outline
    context: tuple[ContextFile, ...] = ()
    format: DocumentFormat = DocumentFormat.MARKDOWN
    model: str = ""
    max_concurrent_sections: int = 0  # 0: the service's default
    language: str = ""


@dataclass(frozen=True)
class OutlineResult:
    outline: Outline
    model: str
    attempts: int


@dataclass(frozen=True)
class SectionText:
    """A piece of section `index`'s text (from 1) as the LLM writes it; `attempt` from 0 (retries count up)."""

    index: int
    offset: int
    text: str
    attempt: int = 0


@dataclass(frozen=True)
class DocumentChunk:
    """A piece of the finished document file."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class SectionStats:
    index: int
    title: str
    characters: int
    tokens: int
    seconds: float
    attempts: int


@dataclass(frozen=True)
class Reference:
    number: int
    name: str
    sections: tuple[int, ...]


@dataclass(frozen=True)
class DocumentResult:
    format: DocumentFormat
    name: str
    size_bytes: int
    sha256: str
    sections: tuple[SectionStats, ...]
    references: tuple[Reference, ...]
    model: str


@dataclass(frozen=True)
class Prompt:
    """One LLM call: a system and a user message, and optionally a JSON Schema the answer must fit."""

    system: str
    user: str
    model: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    json_schema: str = ""  # the schema document as JSON text; "" for free text


@dataclass(frozen=True)
class LlmAnswer:
    text: str
    tokens: int
    model: str


@dataclass
class WrittenSection:
    """A section once written: its text and how it went."""

    stats: SectionStats
    text: str = field(repr=False)
    model: str = ""

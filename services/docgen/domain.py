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
    """One section of an outline: its title, what it should cover, and its subsections."""

    title: str
    summary: str = ""
    children: tuple[OutlineNode, ...] = ()


@dataclass(frozen=True)
class Outline:
    """A document plan: the title and the top-level sections, in reading order."""

    title: str
    nodes: tuple[OutlineNode, ...]


@dataclass(frozen=True)
class ContextFile:
    """A context file's display name and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class OutlineRequest:
    """Stage one: a query (and optional context files) to turn into an outline."""

    query: str
    context: tuple[ContextFile, ...] = ()
    language: str = ""
    max_sections: int = 0  # 0: the service's default
    max_depth: int = 0  # 0: the service's default
    model: str = ""


@dataclass(frozen=True)
class DocumentRequest:
    """Stage two: an outline to write out, section by section, into a Markdown or DOCX file."""

    outline: Outline
    context: tuple[ContextFile, ...] = ()
    format: DocumentFormat = DocumentFormat.MARKDOWN
    model: str = ""
    max_concurrent_sections: int = 0  # 0: the service's default
    language: str = ""


@dataclass(frozen=True)
class OutlineResult:
    """The outline, the model that wrote it, and how many LLM attempts it took to get a valid one."""

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
class SectionStats:
    """What writing one top-level section cost: characters, LLM tokens, seconds and attempts."""

    index: int
    title: str
    characters: int
    tokens: int
    seconds: float
    attempts: int


@dataclass(frozen=True)
class Reference:
    """Context file `number` (as cited, [1], [2] ...), its name and the sections that cite it."""

    number: int
    name: str
    sections: tuple[int, ...]


@dataclass(frozen=True)
class DocumentResult:
    """The written document: its file's name, size and digest, per-section statistics and references."""

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

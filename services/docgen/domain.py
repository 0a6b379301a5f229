"""DocGen's domain: outlines, requests, the events the engine streams and its results (no protos)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from capmesh.services.runtime.chunks import ProducedFile

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
    """A name or BCP 47 tag ("English", "zh"); "": the query's language."""
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
    """As in OutlineRequest; "": the outline's language."""


@dataclass(frozen=True)
class OutlineResult:
    """The outline and the model that wrote it."""

    outline: Outline
    model: str
    attempts: int
    """LLM calls until one gave a valid outline (1 when the first did)."""


@dataclass(frozen=True)
class SectionText:
    """A piece of a top-level section's text, streamed as the LLM writes it."""

    index: int
    """The section, from 1 in outline order (0 is the document file's chunk index)."""
    offset: int
    """Where the piece starts, in UTF-8 bytes of the section's streamed text."""
    text: str
    attempt: int = 0
    """Which LLM call wrote it: 0 for the first, counting up with retries."""


@dataclass(frozen=True)
class SectionStats:
    """What writing one top-level section cost."""

    index: int
    title: str
    characters: int
    """Length of the section's text, in characters."""
    tokens: int
    """Tokens the LLM generated for the text kept."""
    seconds: float
    attempts: int
    """LLM calls it took (1 when the first succeeded)."""


@dataclass(frozen=True)
class Reference:
    """A context file that the document cites."""

    number: int
    """As cited in the text ([1], [2] ...): the file's position in the request's context, from 1."""
    name: str
    sections: tuple[int, ...]
    """The indexes of the top-level sections that cite it."""


@dataclass(frozen=True)
class DocumentResult:
    """The written document (its file's description and format), per-section statistics and references."""

    document: ProducedFile
    format: DocumentFormat
    sections: tuple[SectionStats, ...]
    references: tuple[Reference, ...]
    model: str
    """The model that wrote the sections (the first section's, when they differ)."""


@dataclass(frozen=True)
class Prompt:
    """One LLM call: a system and a user message, and optionally a JSON Schema the answer must fit."""

    system: str
    user: str
    model: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    json_schema: str = ""
    """The schema document as JSON text; "" for free text."""


@dataclass(frozen=True)
class LlmAnswer:
    """The text of one LLM call, the tokens it generated and the model that answered."""

    text: str
    tokens: int
    model: str


@dataclass
class WrittenSection:
    """A section once written: its text and how it went."""

    stats: SectionStats
    text: str = field(repr=False)
    model: str = ""
    used_context: bool = True  # its prompt held the context files (a long one may have left them out)

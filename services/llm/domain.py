"""The LLM's domain requests and results: plain dataclasses, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

FinishReason = Literal["stop", "length", "cancelled"]

FormatKind = Literal["json_schema", "json_object", "regex", "grammar"]
FORMAT_KINDS: tuple[str, ...] = ("json_schema", "json_object", "regex", "grammar")


@dataclass(frozen=True)
class ResponseFormat:
    """A constraint on the answer's text, enforced while decoding.

    `kind` names the proto's oneof field (so errors can name `response_format.<kind>`); `text` is the
    JSON Schema document, the regex or the EBNF grammar, and "" for json_object (any JSON object).
    """

    kind: FormatKind
    text: str = ""

    @property
    def field(self) -> str:
        return f"response_format.{self.kind}"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion; None means "the server's default" for the optional knobs."""

    messages: list[ChatMessage]
    temperature: float = 1.0  # 0 decodes greedily
    top_p: float = 1.0
    max_tokens: int | None = None  # None: up to the server default, within the context window
    stop: list[str] = field(default_factory=list)
    seed: int | None = None  # None: a fresh random seed per request
    model: str = ""  # "" selects the default served model
    response_format: ResponseFormat | None = None  # None: free text


@dataclass(frozen=True)
class TextDelta:
    """Text produced since the previous delta; always whole characters."""

    text: str
    completion_tokens: int = 0  # tokens generated so far, this delta's included


@dataclass(frozen=True)
class ChatResult:
    """The final answer: the full text (the deltas joined), why it ended and the token usage."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


ChatEvent = TextDelta | ChatResult

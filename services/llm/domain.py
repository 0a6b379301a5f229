"""The LLM's domain requests and results: plain dataclasses, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]

ToolChoiceMode = Literal["auto", "none", "required", "function"]

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
class ToolCall:
    """One call of a tool: `arguments` is a JSON object as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an earlier assistant answer's calls
    tool_call_id: str = ""  # role "tool": the call this message answers


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema as JSON text ("" for none)."""

    name: str
    description: str = ""
    parameters: str = ""


@dataclass(frozen=True)
class ToolChoice:
    """How the model uses the tools; `function` names the one tool of mode "function"."""

    mode: ToolChoiceMode = "auto"
    function: str = ""


@dataclass(frozen=True)
class TopLogprob:
    """A token, its log probability and its own bytes (a byte-level token may hold part of a character)."""

    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob(TopLogprob):
    """A generated token's log probability and the most likely alternatives at its step."""

    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """The next piece of the `index`-th tool call; `id` and `name` come in its first piece only."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


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
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1: none
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_p: float = 0.0  # 0: off
    top_k: int = 0  # 0: all tokens
    n: int = 1  # choices, decoded as sibling sequences
    prompt: str = ""  # a raw prompt continued without the chat template (then no messages)

    @property
    def calls_tools(self) -> bool:
        """Whether tools take part in this request (given, and tool_choice is not none)."""
        return bool(self.tools) and self.tool_choice.mode != "none"


@dataclass(frozen=True)
class TextDelta:
    """Text produced since the previous delta; always whole characters."""

    text: str
    completion_tokens: int = 0  # tokens generated so far, this delta's included
    index: int = 0  # the choice (n > 1)
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens since the previous delta, when asked for
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class ChatResult:
    """The final answer: the full text (the deltas joined), why it ended and the token usage."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    index: int = 0  # the choice this result closes; a request with n choices gets n results
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    random_weights: bool = False  # the model is a project-built random checkpoint: the text is noise

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Queued:
    """The request waits for a batch slot behind `position` others."""

    position: int


ChatEvent = TextDelta | ChatResult | Queued

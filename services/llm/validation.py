"""Checks a chat request against the rules; one field violation per bad field, proto field paths."""

from __future__ import annotations

import json
import math

from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ROLES, ChatMessage, ChatRequest, ResponseFormat
from capmesh.services.llm.tools import NAME_PATTERN
from capmesh.services.runtime.errors import PROMPT_TOO_LONG, InvalidArgument, Violations

MAX_SEED = 2**63 - 1
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_LOGIT_BIAS = 100.0


def validate(request: ChatRequest, settings: LlmSettings, context_window: int) -> None:
    """Raises InvalidArgument naming every field that breaks a rule; `context_window` is the number of
    tokens the model sees at once (the prompt plus the answer)."""
    v = Violations()
    if request.prompt:
        v.check(not request.messages, "messages", "must be empty when a raw prompt is given")
        v.check(not request.tools, "tools", "cannot be used with a raw prompt")
    else:
        v.check(bool(request.messages), "messages", "must hold at least one message")
    for i, message in enumerate(request.messages):
        v.check(
            message.role in ROLES, f"messages[{i}].role", f"must be one of {', '.join(ROLES)} (got {message.role!r})"
        )
        _check_message(message, i, v)
    v.check(_finite_between(request.temperature, 0.0, 2.0), "temperature", "must be between 0 and 2")
    v.check(_finite(request.top_p) and 0.0 < request.top_p <= 1.0, "top_p", "must be greater than 0 and at most 1")
    if request.max_tokens is not None:
        v.check(request.max_tokens > 0, "max_tokens", "must be greater than 0")
        v.check(
            request.max_tokens < context_window,
            "max_tokens",
            f"must be less than the model's context window of {context_window} tokens",
        )
    v.check(
        len(request.stop) <= settings.max_stop_sequences,
        "stop",
        f"must hold at most {settings.max_stop_sequences} stop sequences (got {len(request.stop)})",
    )
    for i, stop in enumerate(request.stop):
        v.check(bool(stop), f"stop[{i}]", "must not be empty")
    if request.seed is not None:
        v.check(0 <= request.seed <= MAX_SEED, "seed", f"must be between 0 and {MAX_SEED}")
    if request.response_format is not None:
        _check_format(request.response_format, v)
    _check_sampling(request, settings, v)
    _check_tools(request, v)
    v.raise_if_any()


def _check_message(message: ChatMessage, i: int, v: Violations) -> None:
    has_text = bool(message.content and message.content.strip())
    if message.role == "assistant" and message.tool_calls:
        for j, call in enumerate(message.tool_calls):
            v.check(bool(call.name), f"messages[{i}].tool_calls[{j}].name", "must name the tool called")
    else:
        v.check(has_text, f"messages[{i}].content", "must not be empty")
    if message.role == "tool":
        v.check(bool(message.tool_call_id), f"messages[{i}].tool_call_id", "must name the call this message answers")


def _check_sampling(request: ChatRequest, settings: LlmSettings, v: Violations) -> None:
    v.check(
        0 <= request.top_logprobs <= MAX_TOP_LOGPROBS,
        "top_logprobs",
        f"must be between 0 and {MAX_TOP_LOGPROBS}",
    )
    v.check(request.logprobs or not request.top_logprobs, "top_logprobs", "needs logprobs to be true")
    for name in ("presence_penalty", "frequency_penalty"):
        v.check(_finite_between(getattr(request, name), -2.0, 2.0), name, "must be between -2 and 2")
    v.check(
        _finite(request.repetition_penalty) and request.repetition_penalty > 0,
        "repetition_penalty",
        "must be greater than 0 (1 is no penalty)",
    )
    for token, bias in request.logit_bias.items():
        v.check(
            _finite_between(bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS),
            f"logit_bias[{token}]",
            f"must be between -{MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}",
        )
        v.check(token >= 0, f"logit_bias[{token}]", "must name a token id (0 or more)")
    v.check(_finite_between(request.min_p, 0.0, 1.0), "min_p", "must be between 0 and 1")
    v.check(request.top_k >= 0, "top_k", "must be 0 (all tokens) or more")
    v.check(1 <= request.n <= settings.max_choices, "n", f"must be between 1 and {settings.max_choices}")


def _check_tools(request: ChatRequest, v: Violations) -> None:
    names: set[str] = set()
    for i, tool in enumerate(request.tools):
        v.check(
            bool(NAME_PATTERN.match(tool.name)),
            f"tools[{i}].name",
            "must be 1 to 64 letters, digits, underscores or dashes",
        )
        v.check(tool.name not in names, f"tools[{i}].name", f"repeats the tool name {tool.name!r}")
        names.add(tool.name)
        if tool.parameters.strip():
            try:
                schema = json.loads(tool.parameters)
            except json.JSONDecodeError as exc:
                v.add(f"tools[{i}].parameters", f"must be a JSON Schema as JSON text: {exc}")
                continue
            v.check(
                isinstance(schema, dict) and schema.get("type", "object") == "object",
                f"tools[{i}].parameters",
                "must be a JSON Schema of an object (the arguments)",
            )
    choice = request.tool_choice
    if choice.mode in ("required", "function"):
        v.check(bool(request.tools), "tool_choice", f"is {choice.mode} but no tools were given")
        v.check(
            request.response_format is None,
            "tool_choice",
            "cannot be combined with response_format: the answer is the tool calls",
        )
    if choice.mode == "function" and request.tools:
        v.check(choice.function in names, "tool_choice.function", f"names no tool of the request: {choice.function!r}")


def _check_format(fmt: ResponseFormat, v: Violations) -> None:
    """The checks every engine shares; whether the engine can compile the format is its own check."""
    if fmt.kind == "json_object":
        return
    if not fmt.text.strip():
        v.add(fmt.field, "must not be empty")
        return
    if fmt.kind == "json_schema":
        try:
            schema = json.loads(fmt.text)
        except json.JSONDecodeError as exc:
            v.add(fmt.field, f"must be a JSON Schema as JSON text: {exc}")
            return
        v.check(isinstance(schema, dict), fmt.field, "must be a JSON object (a JSON Schema document)")


def prompt_too_long(prompt_tokens: int, context_window: int) -> InvalidArgument:
    return InvalidArgument.single(
        "messages",
        f"the prompt is {prompt_tokens} tokens, which leaves no room for an answer in the model's "
        f"context window of {context_window} tokens; shorten the messages",
        reason=PROMPT_TOO_LONG,
    )


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _finite_between(value: float, low: float, high: float) -> bool:
    return _finite(value) and low <= value <= high

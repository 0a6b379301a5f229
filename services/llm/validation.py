"""Checks a chat request against the rules; one field violation per bad field, proto field paths."""

from __future__ import annotations

import json
import math

from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ROLES, ChatRequest, ResponseFormat
from capmesh.services.runtime.errors import InvalidArgument, Violations

MAX_SEED = 2**63 - 1


def validate(request: ChatRequest, settings: LlmSettings, context_window: int) -> None:
    """Raises InvalidArgument naming every field that breaks a rule; `context_window` is the number of
    tokens the model sees at once (the prompt plus the answer)."""
    v = Violations()
    v.check(bool(request.messages), "messages", "must hold at least one message")
    for i, message in enumerate(request.messages):
        v.check(
            message.role in ROLES, f"messages[{i}].role", f"must be one of {', '.join(ROLES)} (got {message.role!r})"
        )
        v.check(bool(message.content and message.content.strip()), f"messages[{i}].content", "must not be empty")
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
    v.raise_if_any()


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
    )


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _finite_between(value: float, low: float, high: float) -> bool:
    return _finite(value) and low <= value <= high

"""Tool calling: how tools reach the model and how its answer becomes tool calls.

Two ways, after `tool_choice`:

- **required, or a named function: constrained.** The answer is decoded under a JSON Schema built
  from the tools (`constrained_format`), with the same xgrammar decoding as `response_format`, so
  even a model that never learned to call tools (the tiny random one) returns calls whose
  arguments validate. A named function's answer is its arguments object; `required` answers a JSON
  array of `{"name": ..., "arguments": {...}}` (one item unless parallel_tool_calls).
  `ConstrainedCalls` cuts that JSON, as it streams, into OpenAI-shaped tool-call deltas: the
  call's id and name first, then pieces of its arguments.
- **auto: the chat template's tool format.** Tools are rendered into the prompt by the model's own
  chat template (`tools=` of `apply_chat_template`), and the answer is free text in which the model
  may write calls the way such templates teach it: `<tool_call>{"name": ..., "arguments": ...}
  </tool_call>` (the Hermes format of Qwen, Hermes and most open chat models). `TaggedCalls` holds
  back text that may open a tag and turns each closed tag into a call. A template without tool
  support shows no tools, and the answer is then plain text.
"""

from __future__ import annotations

import json
import re
import uuid

from capmesh.services.llm.domain import ChatRequest, ResponseFormat, Tool, ToolCall, ToolCallDelta

MAX_PARALLEL_TOOL_CALLS = 4  # `required` with parallel calls: bounds a random model's array
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
NO_ARGUMENTS = {"type": "object", "properties": {}}
OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
_CALL_HEADER = re.compile(r'^\s*\{\s*"name"\s*:\s*"([^"]*)"\s*,\s*"arguments"\s*:\s*')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parameters_schema(tool: Tool) -> dict:
    """The tool's arguments schema; arguments are always a JSON object, as OpenAI's are."""
    if not tool.parameters.strip():
        return dict(NO_ARGUMENTS)
    schema = json.loads(tool.parameters)
    return schema if "type" in schema else {**schema, "type": "object"}


def constrained_format(request: ChatRequest) -> ResponseFormat | None:
    """The JSON Schema the answer is decoded under for `required` / a named tool; None for auto/none."""
    choice = request.tool_choice
    if not request.tools or choice.mode in ("auto", "none"):
        return None
    if choice.mode == "function":
        tool = next(t for t in request.tools if t.name == choice.function)
        return ResponseFormat("json_schema", json.dumps(parameters_schema(tool)))
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": parameters_schema(t)},
            "required": ["name", "arguments"],
        }
        for t in request.tools
    ]
    limit = MAX_PARALLEL_TOOL_CALLS if request.parallel_tool_calls else 1
    schema = {"type": "array", "minItems": 1, "maxItems": limit, "items": {"anyOf": calls}}
    return ResponseFormat("json_schema", json.dumps(schema))


def template_tools(tools: list[Tool]) -> list[dict]:
    """The tools in the shape chat templates read (OpenAI's)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": parameters_schema(t)},
        }
        for t in tools
    ]


class CallCollector:
    """The calls an answer made so far, built from the deltas it streamed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # [id, name, arguments]

    def add(self, deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
        for delta in deltas:
            if delta.id:
                self.calls.append([delta.id, delta.name, delta.arguments])
            else:
                self.calls[delta.index][2] += delta.arguments
        return deltas

    def result(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(*call) for call in self.calls)


class ConstrainedCalls(CallCollector):
    """Cuts a constrained answer's JSON into tool-call deltas as it streams (see the module doc)."""

    def __init__(self, function: str = "") -> None:
        super().__init__()
        self._function = function  # a named tool: the whole answer is its arguments
        self._pending = ""
        self._in_arguments = False
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> list[ToolCallDelta]:
        if self._function and not self.calls:
            self._start(self._function)
            out = [ToolCallDelta(0, self.calls[0][0], self._function, "")]
        else:
            out = []
        self._pending += text
        while self._pending:
            if self._in_arguments:
                piece = self._take_arguments()
                if piece:
                    out.append(ToolCallDelta(len(self.calls) - 1, arguments=piece))
                if self._in_arguments:
                    break
            elif self._function:  # what follows a named tool's arguments can only be EOS
                self._pending = ""
            else:
                header = _CALL_HEADER.match(self._pending.lstrip("[, }"))
                if header is None:
                    break
                self._pending = self._pending.lstrip("[, }")[header.end() :]
                self._start(header.group(1))
                out.append(ToolCallDelta(len(self.calls) - 1, self.calls[-1][0], header.group(1), ""))
        for delta in out:
            if delta.arguments:
                self.calls[delta.index][2] += delta.arguments
        return out

    def _start(self, name: str) -> None:
        self.calls.append([new_call_id(), name, ""])
        self._in_arguments, self._depth = True, 0

    def _take_arguments(self) -> str:
        """Consumes the pending text up to the end of the current arguments object."""
        if self._depth == 0:  # the separator's space before the object is not part of the arguments
            self._pending = self._pending.lstrip()
        for i, char in enumerate(self._pending):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    piece, self._pending = self._pending[: i + 1], self._pending[i + 1 :]
                    self._in_arguments = False
                    return piece
        piece, self._pending = self._pending, ""
        return piece


class TaggedCalls(CallCollector):
    """Splits a free answer into text and `<tool_call>` calls (auto mode); see the module doc."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""
        self._in_tag = False

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Returns the text safe to show and the calls closed so far."""
        self._pending += text
        shown: list[str] = []
        deltas: list[ToolCallDelta] = []
        while True:
            if self._in_tag:
                end = self._pending.find(CLOSE_TAG)
                if end < 0:
                    break
                body, self._pending = self._pending[:end], self._pending[end + len(CLOSE_TAG) :]
                self._in_tag = False
                call = _parse_tagged(body)
                if call is None:  # not a call after all: the caller sees what the model wrote
                    shown.append(OPEN_TAG + body + CLOSE_TAG)
                else:
                    deltas.append(ToolCallDelta(len(self.calls), new_call_id(), call[0], call[1]))
                    self.add(deltas[-1:])
                continue
            start = self._pending.find(OPEN_TAG)
            if start >= 0:
                shown.append(self._pending[:start])
                self._pending = self._pending[start + len(OPEN_TAG) :]
                self._in_tag = True
                continue
            keep = _partial_tag(self._pending)
            shown.append(self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep :]
            break
        return "".join(shown), deltas

    def flush(self) -> str:
        """The held-back text once the answer ended (an unclosed tag is shown as written)."""
        held = (OPEN_TAG if self._in_tag else "") + self._pending
        self._pending, self._in_tag = "", False
        return held


def _partial_tag(text: str) -> int:
    for length in range(min(len(OPEN_TAG) - 1, len(text)), 0, -1):
        if text.endswith(OPEN_TAG[:length]):
            return length
    return 0


def _parse_tagged(body: str) -> tuple[str, str] | None:
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        return call["name"], arguments
    return call["name"], json.dumps(arguments)

"""A typed helper over `capmesh.llm.v1.LlmService`.

    from capmesh.client import sync_channel
    from capmesh.client.llm import LlmClient, Message

    with sync_channel("127.0.0.1:50051") as channel:
        llm = LlmClient(channel)
        answer = llm.chat([Message("system", "Be brief."), Message("user", "Hi!")],
                          on_delta=lambda text: print(text, end="", flush=True))
        print(answer.finish_reason, answer.completion_tokens)

`chat` streams (StreamChat); `stream` returns the call itself, whose `cancel()` stops the answer
at the server's next token (the CLI uses it for Ctrl-C).

Structured output: pass `response_format=json_schema({...})` (or `json_object()`, `regex(...)`,
`grammar(...)`) and the server decodes under that constraint, so the answer parses:

        schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40}},
                  "required": ["title"]}
        outline = json.loads(llm.chat([Message("user", "An outline")], response_format=json_schema(schema),
                                      max_tokens=200).text)

An answer cut by `max_tokens` ends with finish reason "length" and may then be incomplete.

Tools: pass `tools=[tool("get_weather", schema)]` and `tool_choice="required"` (or "auto", "none", or a
tool's name); the answer's `tool_calls` then hold the calls, decoded under their schemas. Sampling
controls (`presence_penalty`, `frequency_penalty`, `repetition_penalty`, `logit_bias`, `min_p`,
`top_k`) and `logprobs` / `top_logprobs` are keyword arguments too (`Answer.logprobs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from capmesh.client.errors import ServerError, from_rpc_error
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc

__all__ = ["ROLES", "Answer", "LlmClient", "Message", "grammar", "json_object", "json_schema", "regex", "tool"]

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL}
FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_CANCELLED: "cancelled",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
TOOL_CHOICE_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}
# Optional scalar fields of StreamChatRequest that `stream` takes as keyword arguments.
_OPTIONAL_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "min_p",
    "top_k",
    "top_logprobs",
)


@dataclass(frozen=True)
class Message:
    """One message of the conversation; `role` is system, user or assistant."""

    role: str
    content: str
    tool_calls: tuple[pb.ToolCall, ...] = ()  # an earlier assistant answer's calls
    tool_call_id: str = ""  # role "tool": the call this message answers


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str  # stop, length, cancelled or tool_calls
    prompt_tokens: int
    completion_tokens: int
    model: str
    tool_calls: tuple[pb.ToolCall, ...] = ()
    logprobs: tuple[pb.TokenLogprob, ...] = ()
    random_weights: bool = False  # the model has random weights: the text is noise


def tool(name: str, parameters: Mapping | None = None, description: str = "") -> pb.Tool:
    """A function the model may call; `parameters` is the JSON Schema of its arguments object."""
    return pb.Tool(name=name, description=description, parameters=json.dumps(parameters) if parameters else "")


def json_schema(schema: Mapping | str) -> pb.ResponseFormat:
    """Answers that are JSON valid against `schema` (a dict, or its JSON text)."""
    return pb.ResponseFormat(json_schema=schema if isinstance(schema, str) else json.dumps(schema))


def json_object() -> pb.ResponseFormat:
    """Answers that are any JSON object."""
    return pb.ResponseFormat(json_object=True)


def regex(pattern: str) -> pb.ResponseFormat:
    """Answers that the regular expression `pattern` matches whole."""
    return pb.ResponseFormat(regex=pattern)


def grammar(ebnf: str) -> pb.ResponseFormat:
    """Answers derived from an EBNF grammar (xgrammar's dialect, starting at the rule `root`)."""
    return pb.ResponseFormat(grammar=ebnf)


class LlmClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.LlmServiceStub(channel)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Iterable[str] = (),
        seed: int | None = None,
        model: str = "",
        response_format: pb.ResponseFormat | None = None,
        tools: Sequence[pb.Tool] = (),
        tool_choice: str = "",
        logprobs: bool = False,
        logit_bias: Mapping[int, float] | None = None,
        timeout: float | None = None,
        **optional: float | int | None,
    ):
        """Starts StreamChat and returns the call: iterate it for messages, `cancel()` it to stop.

        `optional` takes the other optional scalars of StreamChatRequest (penalties, min_p, top_k,
        top_logprobs); `tool_choice` is auto, none, required or the name of one of `tools`."""
        unknown = set(optional) - set(_OPTIONAL_FIELDS)
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        request = pb.StreamChatRequest(
            messages=[
                pb.ChatMessage(
                    role=ROLES.get(m.role, pb.ROLE_UNSPECIFIED),
                    content=m.content,
                    tool_calls=m.tool_calls,
                    tool_call_id=m.tool_call_id,
                )
                for m in messages
            ],
            model=model,
            stop=list(stop),
            response_format=response_format,
            tools=list(tools),
            logprobs=logprobs,
            logit_bias=dict(logit_bias or {}),
        )
        if tool_choice in TOOL_CHOICE_MODES:
            request.tool_choice.mode = TOOL_CHOICE_MODES[tool_choice]
        elif tool_choice:
            request.tool_choice.function = tool_choice
        values = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed, **optional}
        for name, value in values.items():
            if value is not None:
                setattr(request, name, value)
        return self._stub.StreamChat(request, timeout=timeout)

    def chat(self, messages: Sequence[Message], *, on_delta: Callable[[str], None] | None = None, **options) -> Answer:
        """Streams the answer to `on_delta` as it is produced and returns it whole."""
        return self.collect(self.stream(messages, **options), on_delta)

    @staticmethod
    def collect(call, on_delta: Callable[[str], None] | None = None) -> Answer:
        """Reads a StreamChat call to its end; raises the client error its status maps to."""
        try:
            for message in call:
                kind = message.WhichOneof("event")
                if kind == "chunk" and on_delta is not None:
                    on_delta(message.chunk.text)
                elif kind == "result":
                    result = message.result
                    return Answer(
                        result.text,
                        FINISH_REASONS.get(result.finish_reason, "stop"),
                        result.usage.prompt_tokens,
                        result.usage.completion_tokens,
                        result.model,
                        tuple(result.tool_calls),
                        tuple(result.logprobs),
                        result.random_weights,
                    )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        raise ServerError(grpc.StatusCode.INTERNAL, "the stream ended without a result")

    def list_models(self, timeout: float | None = None) -> list:
        try:
            return list(self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout).models)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

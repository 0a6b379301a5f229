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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from capmesh.client.errors import ServerError, from_rpc_error
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc as pb_grpc

__all__ = ["ROLES", "Answer", "LlmClient", "Message", "grammar", "json_object", "json_schema", "regex"]

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}
FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class Message:
    """One message of the conversation; `role` is system, user or assistant."""

    role: str
    content: str


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str  # stop, length or cancelled
    prompt_tokens: int
    completion_tokens: int
    model: str


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
        timeout: float | None = None,
    ):
        """Starts StreamChat and returns the call: iterate it for messages, `cancel()` it to stop."""
        request = pb.StreamChatRequest(
            messages=[pb.ChatMessage(role=ROLES.get(m.role, pb.ROLE_UNSPECIFIED), content=m.content) for m in messages],
            model=model,
            stop=list(stop),
            response_format=response_format,
        )
        for name, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens), ("seed", seed)):
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
                    )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        raise ServerError(grpc.StatusCode.INTERNAL, "the stream ended without a result")

    def list_models(self, timeout: float | None = None) -> list:
        try:
            return list(self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout).models)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

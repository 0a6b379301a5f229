"""The one place where LLM protos become domain objects and back."""

from __future__ import annotations

from collections.abc import Sequence

from capmesh.common.v1 import progress_pb2
from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.services.llm.domain import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Queued,
    ResponseFormat,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolChoice,
)

_ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool"}
_FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


def chat_request_from_proto(request: pb.ChatRequest | pb.StreamChatRequest) -> ChatRequest:
    """Unset optional fields become the domain's defaults; ROLE_UNSPECIFIED becomes "" (refused)."""

    def optional(name: str, default):
        return getattr(request, name) if request.HasField(name) else default

    return ChatRequest(
        messages=[_message_from_proto(m) for m in request.messages],
        temperature=optional("temperature", DEFAULT_TEMPERATURE),
        top_p=optional("top_p", DEFAULT_TOP_P),
        max_tokens=optional("max_tokens", None),
        stop=list(request.stop),
        seed=optional("seed", None),
        model=request.model,
        response_format=response_format_from_proto(request.response_format),
        tools=[Tool(t.name, t.description, t.parameters) for t in request.tools],
        tool_choice=_tool_choice_from_proto(request.tool_choice),
        parallel_tool_calls=optional("parallel_tool_calls", True),
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs,
        presence_penalty=optional("presence_penalty", 0.0),
        frequency_penalty=optional("frequency_penalty", 0.0),
        repetition_penalty=optional("repetition_penalty", 1.0),
        logit_bias=dict(request.logit_bias),
        min_p=optional("min_p", 0.0),
        top_k=optional("top_k", 0),
        n=optional("n", 1),
        prompt=request.prompt,
    )


def _message_from_proto(message: pb.ChatMessage) -> ChatMessage:
    return ChatMessage(
        _ROLES.get(message.role, ""),
        message.content,
        tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls),
        message.tool_call_id,
    )


def _tool_choice_from_proto(choice: pb.ToolChoice) -> ToolChoice:
    if choice.WhichOneof("choice") == "function":
        return ToolChoice("function", choice.function)
    return ToolChoice(_TOOL_CHOICE_MODES.get(choice.mode, "auto"))  # type: ignore[arg-type]


def response_format_from_proto(fmt: pb.ResponseFormat) -> ResponseFormat | None:
    """The oneof that is set; none set (or json_object false) means free text."""
    kind = fmt.WhichOneof("format")
    if kind == "json_schema":
        return ResponseFormat("json_schema", fmt.json_schema)
    if kind == "regex":
        return ResponseFormat("regex", fmt.regex)
    if kind == "grammar":
        return ResponseFormat("grammar", fmt.grammar)
    if kind == "json_object" and fmt.json_object:
        return ResponseFormat("json_object")
    return None


def usage_to_proto(results: Sequence[ChatResult]) -> pb.Usage:
    """The prompt once, and the tokens of every choice."""
    prompt = results[0].prompt_tokens
    completion = sum(r.completion_tokens for r in results)
    return pb.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _logprobs_to_proto(logprobs: Sequence[TokenLogprob]) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token=lp.token,
            logprob=lp.logprob,
            bytes=lp.bytes,
            top_logprobs=[pb.TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in lp.top],
        )
        for lp in logprobs
    ]


def _tool_calls_to_proto(calls: Sequence[ToolCall]) -> list[pb.ToolCall]:
    return [pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def delta_to_proto(delta: TextDelta) -> pb.StreamChatResponse:
    return pb.StreamChatResponse(
        chunk=pb.TextDelta(
            text=delta.text,
            completion_tokens=delta.completion_tokens,
            index=delta.index,
            logprobs=_logprobs_to_proto(delta.logprobs),
            tool_calls=[
                pb.ToolCallDelta(index=c.index, id=c.id, name=c.name, arguments=c.arguments) for c in delta.tool_calls
            ],
        )
    )


def queued_to_proto(queued: Queued) -> pb.StreamChatResponse:
    return pb.StreamChatResponse(
        progress=progress_pb2.Progress(
            stage="queued",
            queue_position=queued.position,
            message=f"waiting for a batch slot; {queued.position} requests ahead",
        )
    )


def stream_result_to_proto(result: ChatResult) -> pb.StreamChatResponse:
    return pb.StreamChatResponse(
        result=pb.ChatResult(
            finish_reason=_FINISH_REASONS[result.finish_reason],
            usage=usage_to_proto([result]),
            model=result.model,
            text=result.text,
            index=result.index,
            tool_calls=_tool_calls_to_proto(result.tool_calls),
            logprobs=_logprobs_to_proto(result.logprobs),
            random_weights=result.random_weights,
        )
    )


def chat_response_to_proto(results: Sequence[ChatResult]) -> pb.ChatResponse:
    """One response for every choice, by index; its message and finish_reason are choice 0's."""
    ordered = sorted(results, key=lambda r: r.index)
    choices = [
        pb.ChatChoice(
            index=r.index,
            message=pb.ChatMessage(
                role=pb.ROLE_ASSISTANT, content=r.text, tool_calls=_tool_calls_to_proto(r.tool_calls)
            ),
            finish_reason=_FINISH_REASONS[r.finish_reason],
            logprobs=_logprobs_to_proto(r.logprobs),
        )
        for r in ordered
    ]
    return pb.ChatResponse(
        message=choices[0].message,
        finish_reason=choices[0].finish_reason,
        usage=usage_to_proto(ordered),
        model=ordered[0].model,
        choices=choices,
        random_weights=ordered[0].random_weights,
    )

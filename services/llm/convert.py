"""The one place where LLM protos become domain objects and back."""

from __future__ import annotations

from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.services.llm.domain import ChatMessage, ChatRequest, ChatResult, ResponseFormat, TextDelta

_ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
_FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
}
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


def chat_request_from_proto(request: pb.ChatRequest | pb.StreamChatRequest) -> ChatRequest:
    """Unset optional fields become the domain's defaults; ROLE_UNSPECIFIED becomes "" (refused)."""
    return ChatRequest(
        messages=[ChatMessage(_ROLES.get(m.role, ""), m.content) for m in request.messages],
        temperature=request.temperature if request.HasField("temperature") else DEFAULT_TEMPERATURE,
        top_p=request.top_p if request.HasField("top_p") else DEFAULT_TOP_P,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        stop=list(request.stop),
        seed=request.seed if request.HasField("seed") else None,
        model=request.model,
        response_format=response_format_from_proto(request.response_format),
    )


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


def usage_to_proto(result: ChatResult) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, total_tokens=result.total_tokens
    )


def delta_to_proto(delta: TextDelta) -> pb.StreamChatResponse:
    return pb.StreamChatResponse(chunk=pb.TextDelta(text=delta.text, completion_tokens=delta.completion_tokens))


def stream_result_to_proto(result: ChatResult) -> pb.StreamChatResponse:
    return pb.StreamChatResponse(
        result=pb.ChatResult(
            finish_reason=_FINISH_REASONS[result.finish_reason],
            usage=usage_to_proto(result),
            model=result.model,
            text=result.text,
        )
    )


def chat_response_to_proto(result: ChatResult) -> pb.ChatResponse:
    return pb.ChatResponse(
        message=pb.ChatMessage(role=pb.ROLE_ASSISTANT, content=result.text),
        finish_reason=_FINISH_REASONS[result.finish_reason],
        usage=usage_to_proto(result),
        model=result.model,
    )

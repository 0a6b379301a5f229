"""OpenAI-compatible endpoints mapped onto the capability services, with OpenAI's error shape.

- `POST /v1/chat/completions` -> LlmService.Chat, or StreamChat as `chat.completion.chunk` SSE
  ending with `data: [DONE]` when `stream` is true; tools, logprobs, penalties and n included;
- `POST /v1/completions` (legacy) -> the same RPCs with a raw `prompt` (no chat template);
- `POST /v1/embeddings` -> 404 saying that no embedding capability exists;
- `POST /v1/audio/speech` -> TtsService.StreamSynthesize, the audio bytes streamed as produced;
- `POST /v1/images/generations` -> ImageGenService.StreamGenerateImages, as `b64_json` or as a
  `url` of a file stored through FileService (b64_json when no file service answers);
- `GET /v1/models` -> LlmService.ListModels plus the models the registry lists per capability.

Errors are `{"error": {"message", "type", "param", "code"}}`: `param` is the first field
violation and `code` the ErrorInfo reason in lower case. Every request parameter is honoured or
refused with a 400 naming it (`Parameters`), never silently dropped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from capmesh.client import llm as llm_client
from capmesh.client.tts import finalize_wav
from capmesh.gateway.server.http import streams
from capmesh.gateway.server.http.context import BridgeContext, context_of, mark_route, read_body
from capmesh.gateway.server.http.errors import HttpError, from_rpc_error, invalid_field, make_error
from capmesh.gateway.server.http.json_codec import parse_json_body
from capmesh.gateway.v1 import file_service_pb2, registry_service_pb2
from capmesh.imagegen.v1 import imagegen_service_pb2
from capmesh.llm.v1 import llm_service_pb2
from capmesh.tts.v1 import tts_service_pb2

CHAT = "/capmesh.llm.v1.LlmService/Chat"
STREAM_CHAT = "/capmesh.llm.v1.LlmService/StreamChat"
LIST_MODELS = "/capmesh.llm.v1.LlmService/ListModels"
SYNTHESIZE = "/capmesh.tts.v1.TtsService/StreamSynthesize"
GENERATE_IMAGES = "/capmesh.imagegen.v1.ImageGenService/StreamGenerateImages"
LIST_CAPABILITIES = "/capmesh.gateway.v1.RegistryService/ListCapabilities"
UPLOAD = "/capmesh.gateway.v1.FileService/UploadFile"

ROLES = {
    "system": llm_service_pb2.ROLE_SYSTEM,
    "developer": llm_service_pb2.ROLE_SYSTEM,
    "user": llm_service_pb2.ROLE_USER,
    "assistant": llm_service_pb2.ROLE_ASSISTANT,
    "tool": llm_service_pb2.ROLE_TOOL,
}
TOOL_CHOICE_MODES = llm_client.TOOL_CHOICE_MODES
LEGACY_MAX_LOGPROBS = 5  # /v1/completions' `logprobs` is a count of alternatives, at most 5
# OpenAI has no "cancelled" finish reason: a cancelled answer ends as "stop".
FINISH_REASONS = {**llm_client.FINISH_REASONS, llm_service_pb2.FINISH_REASON_CANCELLED: "stop"}
SPEECH_FORMATS = {
    "wav": (tts_service_pb2.AUDIO_FORMAT_WAV, "audio/wav"),
    "pcm": (tts_service_pb2.AUDIO_FORMAT_PCM, "audio/pcm"),
    "mp3": (tts_service_pb2.AUDIO_FORMAT_MP3, "audio/mpeg"),
    "flac": (tts_service_pb2.AUDIO_FORMAT_FLAC, "audio/flac"),
    "opus": (tts_service_pb2.AUDIO_FORMAT_OGG, "audio/ogg"),
    "ogg": (tts_service_pb2.AUDIO_FORMAT_OGG, "audio/ogg"),
}
# OpenAI's own voice and model names mean "the service's default" here.
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
OPENAI_TTS_MODELS = {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
OPENAI_IMAGE_MODELS = {"dall-e-2", "dall-e-3", "gpt-image-1"}

ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
}


def openai_error_body(error: HttpError) -> dict:
    details = error.details()
    violations = details.field_violations
    return {
        "error": {
            "message": error.message,
            "type": ERROR_TYPES.get(
                error.http_status, "server_error" if error.http_status >= 500 else "invalid_request_error"
            ),
            "param": violations[0][0] if violations else None,
            "code": (details.reason or error.code_name).lower(),
        }
    }


def openai_error(error: HttpError) -> JSONResponse:
    return JSONResponse(openai_error_body(error), status_code=error.http_status, headers=error.response_headers())


async def _json_object(request: Request, context: BridgeContext) -> dict:
    payload = parse_json_body(await read_body(request, context.settings.max_body_bytes))
    if not isinstance(payload, dict):
        raise invalid_field("body", "must be a JSON object")
    return payload


def _typed(payload: dict, name: str, kinds: tuple[type, ...], description: str):
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise invalid_field(name, f"must be {description}")
    if not isinstance(value, kinds):
        raise invalid_field(name, f"must be {description}")
    return value


def _required_string(payload: dict, name: str) -> str:
    value = _typed(payload, name, (str,), "a string")
    if not value:
        raise invalid_field(name, "must be a non-empty string")
    return value


def _one_of(payload: dict, name: str, allowed: Collection[str], default: str) -> str:
    value = _typed(payload, name, (str,), "a string") or default
    if value not in allowed:
        raise invalid_field(name, f"must be one of {', '.join(allowed)}")
    return value


def _assign(message, field: str, value, param: str | None = None) -> None:
    """Sets a proto field from a caller's value; out-of-range numbers are the caller's mistake."""
    try:
        setattr(message, field, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid_field(param or field, f"cannot take {value!r}: {exc}") from None


_NUMBER = ((int, float), "a number")
_INTEGER = ((int,), "an integer")


def _copy(payload: dict, message, name: str, kind: tuple[tuple[type, ...], str], field: str = "") -> None:
    """Sets `field` (default: `name`) of the proto from the caller's optional `name`, checked by `kind`."""
    value = _typed(payload, name, *kind)
    if value is not None:
        _assign(message, field or name, value, name)


# ---------------------------------------------------------------------------------- parameters
# The rule (README, "OpenAI-compatible endpoints"): every parameter is honoured or answered with
# a 400 that names it, never dropped. `tests/http/test_openai_parameters.py` walks the openai
# package's request types against these tables.


@dataclass(frozen=True)
class Parameters:
    """What one endpoint does with each request parameter."""

    honoured: frozenset[str]
    # Accepted, and by their nature they never change an answer (who is calling, cache hints).
    informational: frozenset[str] = frozenset()
    # Accepted only with these values (the ones that describe what capmesh does anyway).
    only: Mapping[str, tuple[object, ...]] = field(default_factory=dict)

    def check(self, payload: dict) -> None:
        for name, value in payload.items():
            if value is None or name in self.honoured or name in self.informational:
                continue
            if name in self.only:
                allowed = self.only[name]
                if value in allowed:
                    continue
                raise invalid_field(name, f"is supported only as {' or '.join(json.dumps(a) for a in allowed)}")
            raise invalid_field(name, "is not supported by this server; remove it")


# Who is calling, and cache hints: OpenAI uses them for abuse monitoring and billing only.
_WHO = frozenset({"user", "safety_identifier", "metadata", "prompt_cache_key"})
# The sampling parameters chat and completions share, all applied by `_sampling`.
_SAMPLING_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "min_p")
_SAMPLING_INTEGERS = ("max_tokens", "seed", "top_k", "n")
# repetition_penalty, min_p and top_k are not OpenAI's: vLLM takes them, the SDK sends them as extra_body.
_GENERATION = frozenset(
    {"model", "stream", "stream_options", "logprobs", "stop", "logit_bias", *_SAMPLING_NUMBERS, *_SAMPLING_INTEGERS}
)
CHAT_PARAMETERS = Parameters(
    honoured=_GENERATION
    | {
        "messages",
        "max_completion_tokens",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    },
    informational=_WHO,
    only={"store": (False,), "service_tier": ("auto", "default"), "modalities": (["text"],)},
)
COMPLETION_PARAMETERS = Parameters(
    honoured=_GENERATION | {"prompt", "echo"},
    informational=frozenset({"user"}),
    only={"best_of": (1,), "suffix": ("",)},
)
SPEECH_PARAMETERS = Parameters(
    honoured=frozenset({"input", "model", "voice", "response_format", "speed", "sample_rate"}),
    only={"stream_format": ("audio",)},
)
IMAGE_PARAMETERS = Parameters(
    honoured=frozenset(
        {"prompt", "model", "n", "size", "response_format", "negative_prompt", "steps", "seed", "guidance_scale"}
    ),
    informational=frozenset({"user", "safety_identifier"}),
    only={"output_format": ("png",), "stream": (False,), "quality": ("auto",), "moderation": ("auto",)},
)

# ---------------------------------------------------------------------------------------- chat


def _message_text(content: object, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid_field(f"messages[{index}].content[{part_index}]", "only text parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid_field(f"messages[{index}].content", "must be a string or a list of text parts")


def _chat_message(message: object, index: int) -> llm_service_pb2.ChatMessage:
    if not isinstance(message, dict):
        raise invalid_field(f"messages[{index}]", "must be an object with role and content")
    role = ROLES.get(str(message.get("role")))
    if role is None:
        raise invalid_field(f"messages[{index}].role", f"must be one of {', '.join(sorted(ROLES))}")
    calls = message.get("tool_calls")
    content = message.get("content")
    # An assistant message that only calls tools has no content (null), as OpenAI sends it.
    text = "" if content is None and calls else _message_text(content, index)
    out = llm_service_pb2.ChatMessage(role=role, content=text)
    if role == llm_service_pb2.ROLE_TOOL:
        out.tool_call_id = _typed(message, "tool_call_id", (str,), "a string") or ""
    if calls is not None:
        if role != llm_service_pb2.ROLE_ASSISTANT or not isinstance(calls, list):
            raise invalid_field(f"messages[{index}].tool_calls", "must be a list, on an assistant message")
        for call_index, call in enumerate(calls):
            path = f"messages[{index}].tool_calls[{call_index}]"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid_field(path, "must be {id, type: function, function: {name, arguments}}")
            arguments = function.get("arguments", "{}")
            out.tool_calls.add(
                id=str(call.get("id") or ""),
                name=function["name"],
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
    return out


def _sampling(payload: dict, request) -> None:
    """The sampling fields chat and completions share."""
    for name in _SAMPLING_NUMBERS:
        _copy(payload, request, name, _NUMBER)
    for name in _SAMPLING_INTEGERS:
        _copy(payload, request, name, _INTEGER)
    stop = payload.get("stop")
    if isinstance(stop, str):
        request.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        request.stop.extend(stop)
    elif stop is not None:
        raise invalid_field("stop", "must be a string or a list of strings")
    bias = _typed(payload, "logit_bias", (dict,), "an object of token ids to biases")
    for token, value in (bias or {}).items():
        if not (isinstance(token, str) and token.isdigit()) or isinstance(value, bool):
            raise invalid_field(f"logit_bias[{token}]", "must map a token id to a number")
        if not isinstance(value, (int, float)) or int(token) >= 2**31:
            raise invalid_field(f"logit_bias[{token}]", "must map a token id to a number")
        request.logit_bias[int(token)] = value


def chat_request(payload: dict, message_type):
    CHAT_PARAMETERS.check(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise invalid_field("messages", "must be a list of messages")
    request = message_type(model=_typed(payload, "model", (str,), "a string") or "")
    request.messages.extend(_chat_message(message, index) for index, message in enumerate(messages))
    _sampling(payload, request)
    # max_completion_tokens is the newer name of max_tokens; it wins when both are sent.
    _copy(payload, request, "max_completion_tokens", _INTEGER, field="max_tokens")
    _copy(payload, request, "parallel_tool_calls", ((bool,), "true or false"))
    logprobs = _typed(payload, "logprobs", (bool,), "true or false")
    if logprobs:
        request.logprobs = True
    _copy(payload, request, "top_logprobs", _INTEGER)
    _tools(payload, request)
    _response_format(payload, request.response_format)
    return request


def _tools(payload: dict, request) -> None:
    """OpenAI's `tools` (functions only) and `tool_choice`."""
    tools = _typed(payload, "tools", (list,), "a list of tools")
    for index, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise invalid_field(f"tools[{index}]", "must be {type: function, function: {name, parameters}}")
        name = _typed(function, "name", (str,), "a string")
        if not name:
            raise invalid_field(f"tools[{index}].function.name", "must be a non-empty string")
        parameters = _typed(function, "parameters", (dict,), "a JSON Schema object")
        request.tools.add(
            name=name,
            description=_typed(function, "description", (str,), "a string") or "",
            parameters=json.dumps(parameters) if parameters is not None else "",
        )
    choice = payload.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        request.tool_choice.mode = TOOL_CHOICE_MODES[choice]
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid_field("tool_choice", "must be auto, none, required or {type: function, function: {name}}")
    request.tool_choice.function = function["name"]


def _response_format(payload: dict, target: llm_service_pb2.ResponseFormat) -> None:
    """OpenAI's chat `response_format`: text, json_object, or json_schema with its `schema`.

    The schema is always enforced (constrained decoding), whatever `strict` says; `name` and
    `description` only matter to OpenAI's own models and are not forwarded.
    """
    fmt = _typed(payload, "response_format", (dict,), "an object with a type")
    if fmt is None:
        return
    kind = fmt.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        target.json_object = True
        return
    if kind != "json_schema":
        raise invalid_field("response_format.type", "must be text, json_object or json_schema")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid_field("response_format.json_schema", "must be an object with a schema")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise invalid_field("response_format.json_schema.schema", "must be a JSON Schema object")
    target.json_schema = json.dumps(schema)


def _usage(usage: llm_service_pb2.Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _token_logprobs(logprobs) -> list[dict]:
    """OpenAI's chat `logprobs.content` entries."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top_logprobs],
        }
        for lp in logprobs
    ]


def _tool_calls(calls) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _finish_reason(reason: llm_service_pb2.FinishReason) -> str:
    return FINISH_REASONS.get(reason, "stop")


async def _answer(request: Request, route: str, answer) -> Response:
    """Runs one chat or legacy completion endpoint: every refusal and backend failure in OpenAI's shape."""
    mark_route(request, route)
    context = context_of(request)
    try:
        payload = await _json_object(request, context)
        return await answer(request, context, payload)
    except HttpError as error:
        return openai_error(error)
    except grpc.aio.AioRpcError as exc:
        return openai_error(from_rpc_error(exc))


async def _chat_reply(request: Request, context: BridgeContext, chat) -> llm_service_pb2.ChatResponse:
    raw = await context.calls.unary(CHAT, chat.SerializeToString(), metadata=context.metadata(request))
    return llm_service_pb2.ChatResponse.FromString(raw)


class _Envelope:
    """The fields every body of one answer carries; a stream's chunks share one id and creation time."""

    def __init__(self, id_prefix: str, kind: str) -> None:
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.kind = kind
        self.created = int(time.time())

    def body(self, model: str, choices: list[dict], usage: dict | None = None) -> dict:
        body = {"id": self.id, "object": self.kind, "created": self.created, "model": model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body


async def chat_completions(request: Request) -> Response:
    return await _answer(request, "/v1/chat/completions", _chat)


async def _chat(request: Request, context: BridgeContext, payload: dict) -> Response:
    if _typed(payload, "stream", (bool,), "true or false"):
        return await _stream_chat(request, context, payload)
    chat = chat_request(payload, llm_service_pb2.ChatRequest)
    reply = await _chat_reply(request, context, chat)
    choices = []
    for choice in reply.choices:
        message: dict = {"role": "assistant", "content": choice.message.content}
        if choice.message.tool_calls:
            message["tool_calls"] = _tool_calls(choice.message.tool_calls)
            message["content"] = choice.message.content or None
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "finish_reason": _finish_reason(choice.finish_reason),
                "logprobs": {"content": _token_logprobs(choice.logprobs)} if chat.logprobs else None,
            }
        )
    envelope = _Envelope("chatcmpl", "chat.completion")
    return JSONResponse(envelope.body(reply.model or chat.model, choices, _usage(reply.usage)))


class _Stream(_Envelope):
    """A streamed answer (chat or legacy): its envelope, and usage summed over its results (one per
    choice: the prompt once, every choice's tokens), sent after the last one when the client asked."""

    def __init__(self, id_prefix: str, kind: str, payload: dict, request) -> None:
        super().__init__(id_prefix, kind)
        self.model = request.model
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.choices_left = request.n if request.HasField("n") else 1
        self.prompt = self.completion = 0

    def chunk(self, choices: list[dict], model: str = "") -> dict:
        return self.body(model or self.model, choices)

    def finished(self, result: llm_service_pb2.ChatResult, choice: dict) -> list[dict]:
        """The events for one choice's end: its last chunk, then the usage once every choice has ended."""
        model = result.model or self.model
        events = [self.chunk([choice], model)]
        self.prompt = result.usage.prompt_tokens
        self.completion += result.usage.completion_tokens
        self.choices_left -= 1
        if self.choices_left <= 0 and self.include_usage:
            usage = {
                "prompt_tokens": self.prompt,
                "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion,
            }
            events.append(self.body(model, [], usage))
        return events


async def _stream_chat(request: Request, context: BridgeContext, payload: dict) -> Response:
    chat = chat_request(payload, llm_service_pb2.StreamChatRequest)
    stream = _Stream("chatcmpl", "chat.completion.chunk", payload, chat)
    role_sent: set[int] = set()

    def choice(index: int, delta: dict, finish_reason: str | None = None, logprobs=None) -> dict:
        return {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": {"content": _token_logprobs(logprobs)} if logprobs else None,
        }

    def encode(reply: llm_service_pb2.StreamChatResponse, kind: str | None) -> list[dict]:
        events = []
        at = reply.chunk.index if kind == "chunk" else reply.result.index
        if at not in role_sent and kind in {"chunk", "result"}:
            events.append(stream.chunk([choice(at, {"role": "assistant", "content": ""})]))
            role_sent.add(at)
        if kind == "chunk":
            delta: dict = {}
            if reply.chunk.text:
                delta["content"] = reply.chunk.text
            if reply.chunk.tool_calls:
                delta["tool_calls"] = [_tool_call_delta(c) for c in reply.chunk.tool_calls]
            if delta or reply.chunk.logprobs:
                events.append(stream.chunk([choice(at, delta, logprobs=reply.chunk.logprobs)]))
        elif kind == "result":
            events += stream.finished(reply.result, choice(at, {}, _finish_reason(reply.result.finish_reason)))
        return events

    return await _sse(request, context, chat, encode)


def _tool_call_delta(call: llm_service_pb2.ToolCallDelta) -> dict:
    """OpenAI's streamed tool-call piece: id, type and name in the call's first piece only."""
    out: dict = {"index": call.index, "function": {"arguments": call.arguments}}
    if call.id:
        out["id"] = call.id
        out["type"] = "function"
        out["function"]["name"] = call.name
    return out


async def _sse(request: Request, context: BridgeContext, message, encode) -> Response:
    """StreamChat as server-sent events: `encode` turns each reply (and its event kind) into events."""

    def encode_message(raw: bytes, index: int) -> bytes:
        reply = llm_service_pb2.StreamChatResponse.FromString(raw)
        return b"".join(streams.sse_event(event) for event in encode(reply, reply.WhichOneof("event")))

    call = context.calls.stream(STREAM_CHAT, message.SerializeToString(), metadata=context.metadata(request))
    body = await streams.start_stream(
        call,
        encode_message=encode_message,
        encode_error=lambda error: streams.sse_event(openai_error_body(error)) + b"data: [DONE]\n\n",
        keepalive=streams.SSE_KEEPALIVE,
        keepalive_s=context.settings.sse_keepalive_s,
        end=b"data: [DONE]\n\n",
    )
    return StreamingResponse(body, media_type=streams.SSE, headers=streams.SSE_HEADERS)


# --------------------------------------------------------------------------------- completions


def completion_request(payload: dict, message_type):
    """OpenAI's legacy `/v1/completions` as a raw-prompt chat request (no chat template)."""
    COMPLETION_PARAMETERS.check(payload)
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid_field("prompt", "must be a non-empty string (one prompt per request)")
    request = message_type(model=_typed(payload, "model", (str,), "a string") or "", prompt=prompt)
    _sampling(payload, request)
    # Legacy `logprobs` is the number of alternatives per token (0 to 5), not a flag.
    top = _typed(payload, "logprobs", (int,), "an integer from 0 to 5")
    if top is not None:
        if not 0 <= top <= LEGACY_MAX_LOGPROBS:
            raise invalid_field("logprobs", f"must be between 0 and {LEGACY_MAX_LOGPROBS}")
        request.logprobs = True
        request.top_logprobs = top
    return request


def _legacy_logprobs(logprobs, offset: int) -> dict:
    """The legacy shape: parallel lists of tokens, their logprobs, alternatives and text offsets."""
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top_logprobs} for lp in logprobs],
        "text_offset": offsets,
    }


async def completions(request: Request) -> Response:
    return await _answer(request, "/v1/completions", _completion)


async def _completion(request: Request, context: BridgeContext, payload: dict) -> Response:
    echo = bool(_typed(payload, "echo", (bool,), "true or false"))
    if _typed(payload, "stream", (bool,), "true or false"):
        return await _stream_completion(request, context, payload, echo)
    completion = completion_request(payload, llm_service_pb2.ChatRequest)
    reply = await _chat_reply(request, context, completion)
    prefix = completion.prompt if echo else ""
    choices = [
        {
            "index": choice.index,
            "text": prefix + choice.message.content,
            "finish_reason": _finish_reason(choice.finish_reason),
            "logprobs": _legacy_logprobs(choice.logprobs, len(prefix)) if completion.logprobs else None,
        }
        for choice in reply.choices
    ]
    envelope = _Envelope("cmpl", "text_completion")
    return JSONResponse(envelope.body(reply.model or completion.model, choices, _usage(reply.usage)))


async def _stream_completion(request: Request, context: BridgeContext, payload: dict, echo: bool) -> Response:
    completion = completion_request(payload, llm_service_pb2.StreamChatRequest)
    stream = _Stream("cmpl", "text_completion", payload, completion)
    echoed: set[int] = set()
    offsets: dict[int, int] = {}  # per choice: where the next token's text starts
    start = len(completion.prompt) if echo else 0

    def encode(reply: llm_service_pb2.StreamChatResponse, kind: str | None) -> list[dict]:
        if kind == "chunk":
            at = reply.chunk.index
            text = reply.chunk.text
            if echo and at not in echoed:
                text = completion.prompt + text
                echoed.add(at)
            logprobs = None
            if reply.chunk.logprobs:
                logprobs = _legacy_logprobs(reply.chunk.logprobs, offsets.get(at, start))
                offsets[at] = offsets.get(at, start) + sum(len(lp.token) for lp in reply.chunk.logprobs)
            if text or logprobs:
                return [stream.chunk([{"index": at, "text": text, "finish_reason": None, "logprobs": logprobs}])]
        elif kind == "result":
            finish = {
                "index": reply.result.index,
                "text": "",
                "finish_reason": _finish_reason(reply.result.finish_reason),
                "logprobs": None,
            }
            return stream.finished(reply.result, finish)
        return []

    return await _sse(request, context, completion, encode)


async def embeddings(request: Request) -> Response:
    """No capability of the mesh embeds text: a 404 that says so, rather than a bare "not found"."""
    mark_route(request, "/v1/embeddings")
    error = make_error(
        "NOT_FOUND",
        "no embedding capability exists in this mesh: /v1/embeddings is not served "
        "(the LLM capability answers /v1/chat/completions and /v1/completions)",
        reason="NO_EMBEDDING_CAPABILITY",
    )
    return openai_error(error)


# -------------------------------------------------------------------------------------- speech


def speech_request(payload: dict) -> tuple[tts_service_pb2.StreamSynthesizeRequest, str]:
    SPEECH_PARAMETERS.check(payload)
    text = _required_string(payload, "input")
    audio_format, media_type = SPEECH_FORMATS[_one_of(payload, "response_format", SPEECH_FORMATS, "mp3")]
    voice = _typed(payload, "voice", (str,), "a string") or ""
    model = _typed(payload, "model", (str,), "a string") or ""
    request = tts_service_pb2.StreamSynthesizeRequest(
        text=text,
        format=audio_format,
        voice="" if voice in OPENAI_VOICES else voice,
        model="" if model in OPENAI_TTS_MODELS else model,
    )
    _copy(payload, request, "speed", _NUMBER)
    _copy(payload, request, "sample_rate", _INTEGER)
    return request, media_type


async def audio_speech(request: Request) -> Response:
    mark_route(request, "/v1/audio/speech")
    context = context_of(request)
    try:
        payload = await _json_object(request, context)
        synthesize, media_type = speech_request(payload)
    except HttpError as error:
        return openai_error(error)
    call = context.calls.stream(SYNTHESIZE, synthesize.SerializeToString(), metadata=context.metadata(request))

    def encode(raw: bytes, index: int) -> bytes:
        reply = tts_service_pb2.StreamSynthesizeResponse.FromString(raw)
        return reply.chunk.data if reply.WhichOneof("event") == "chunk" else b""

    if synthesize.format == tts_service_pb2.AUDIO_FORMAT_WAV:
        # A streamed WAV's header holds "unknown" sizes, which Python's `wave` and others read as
        # 2 GiB of frames; the whole file is sent instead, with its true sizes (and any failure as
        # a proper error status).
        audio = bytearray()
        try:
            async with contextlib.aclosing(call):  # a client gone cancels the call at once
                async for raw in call:
                    audio += encode(raw, 0)
        except grpc.aio.AioRpcError as exc:
            return openai_error(from_rpc_error(exc))
        return Response(finalize_wav(bytes(audio)), media_type=media_type)

    # Audio cannot carry an error after it started: a failure then just ends the body early.
    try:
        body = await streams.start_stream(
            call,
            encode_message=encode,
            encode_error=lambda error: b"",
            keepalive=b"",
            keepalive_s=context.settings.sse_keepalive_s,
        )
    except HttpError as error:
        return openai_error(error)
    return StreamingResponse(body, media_type=media_type)


# -------------------------------------------------------------------------------------- images


def image_request(payload: dict) -> tuple[imagegen_service_pb2.StreamGenerateImagesRequest, str]:
    IMAGE_PARAMETERS.check(payload)
    prompt = _required_string(payload, "prompt")
    response_format = _one_of(payload, "response_format", ("b64_json", "url"), "b64_json")
    model = _typed(payload, "model", (str,), "a string") or ""
    request = imagegen_service_pb2.StreamGenerateImagesRequest(
        prompt=prompt,
        negative_prompt=_typed(payload, "negative_prompt", (str,), "a string") or "",
        model="" if model in OPENAI_IMAGE_MODELS else model,
    )
    _assign(request, "num_images", _typed(payload, "n", (int,), "an integer") or 1, "n")
    size = _typed(payload, "size", (str,), "a string like 512x512")
    if size and size != "auto":
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise invalid_field("size", "must look like 512x512")
        _assign(request, "width", int(width), "size")
        _assign(request, "height", int(height), "size")
    for name in ("steps", "seed"):
        _copy(payload, request, name, _INTEGER)
    _copy(payload, request, "guidance_scale", _NUMBER)
    return request, response_format


async def images_generations(request: Request) -> Response:
    mark_route(request, "/v1/images/generations")
    context = context_of(request)
    metadata = context.metadata(request)
    try:
        payload = await _json_object(request, context)
        generate, response_format = image_request(payload)
        images: dict[int, bytearray] = {}
        generated = context.calls.stream(GENERATE_IMAGES, generate.SerializeToString(), metadata=metadata)
        async with contextlib.aclosing(generated):
            async for raw in generated:
                reply = imagegen_service_pb2.StreamGenerateImagesResponse.FromString(raw)
                if reply.WhichOneof("event") == "chunk":
                    images.setdefault(reply.chunk.index, bytearray()).extend(reply.chunk.data)
        data = []
        for index in sorted(images):
            png = bytes(images[index])
            url = await _store_image(context, png, index, metadata, request) if response_format == "url" else None
            data.append({"url": url} if url else {"b64_json": base64.b64encode(png).decode()})
    except HttpError as error:
        return openai_error(error)
    except grpc.aio.AioRpcError as exc:
        return openai_error(from_rpc_error(exc))
    return JSONResponse({"created": int(time.time()), "data": data})


async def _store_image(context: BridgeContext, png: bytes, index: int, metadata, request: Request) -> str | None:
    async def messages() -> AsyncIterator[bytes]:
        header = file_service_pb2.UploadHeader(name=f"image-{index}.png", mime_type="image/png")
        yield file_service_pb2.UploadFileRequest(header=header).SerializeToString()
        for start in range(0, len(png), 1024 * 1024):
            yield file_service_pb2.UploadFileRequest(chunk=png[start : start + 1024 * 1024]).SerializeToString()

    try:
        raw = await context.calls.client_stream(UPLOAD, messages(), metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
            return None  # no file service: the caller gets b64_json instead
        raise
    file_id = file_service_pb2.UploadFileResponse.FromString(raw).file.file_id
    return str(request.base_url).rstrip("/") + f"/v1/files/{file_id}:download"


# -------------------------------------------------------------------------------------- models


async def list_models(request: Request) -> Response:
    mark_route(request, "/v1/models")
    context = context_of(request)
    metadata = context.metadata(request)
    created = int(time.time())
    found: dict[str, dict] = {}
    errors: list[HttpError] = []
    try:
        raw = await context.calls.unary(
            LIST_MODELS, llm_service_pb2.ListModelsRequest().SerializeToString(), metadata=metadata
        )
        for model in llm_service_pb2.ListModelsResponse.FromString(raw).models:
            found[model.name] = {"id": model.name, "object": "model", "created": created, "owned_by": "capmesh-llm"}
    except grpc.aio.AioRpcError as exc:
        errors.append(from_rpc_error(exc))
    try:
        raw = await context.calls.unary(
            LIST_CAPABILITIES, registry_service_pb2.ListCapabilitiesRequest().SerializeToString(), metadata=metadata
        )
        for capability in registry_service_pb2.ListCapabilitiesResponse.FromString(raw).capabilities:
            for status in capability.backends:
                for name in status.backend.models:
                    found.setdefault(
                        name,
                        {
                            "id": name,
                            "object": "model",
                            "created": created,
                            "owned_by": f"capmesh-{capability.capability}",
                        },
                    )
    except grpc.aio.AioRpcError as exc:
        errors.append(from_rpc_error(exc))
    auth_failures = [e for e in errors if e.code_name in {"UNAUTHENTICATED", "PERMISSION_DENIED"}]
    if auth_failures:
        return openai_error(auth_failures[0])
    if (
        not found
        and len(errors) == 2
        and all(e.code_name not in {"UNIMPLEMENTED", "UNAVAILABLE", "NOT_FOUND"} for e in errors)
    ):
        return openai_error(errors[0])
    return JSONResponse({"object": "list", "data": list(found.values())})

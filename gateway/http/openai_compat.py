"""OpenAI-compatible endpoints mapped onto the capability services, with OpenAI's error shape.

- `POST /v1/chat/completions` -> LlmService.Chat, or StreamChat as `chat.completion.chunk` SSE
  ending with `data: [DONE]` when `stream` is true;
- `POST /v1/audio/speech` -> TtsService.StreamSynthesize, the audio bytes streamed as produced;
- `POST /v1/images/generations` -> ImageGenService.StreamGenerateImages, as `b64_json` or as a
  `url` of a file stored through FileService (b64_json when no file service answers);
- `GET /v1/models` -> LlmService.ListModels plus the models the registry lists per capability.

Errors are `{"error": {"message", "type", "param", "code"}}`: `param` is the first field
violation and `code` the ErrorInfo reason in lower case.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from capmesh.gateway.server.http import streams
from capmesh.gateway.server.http.context import BridgeContext, context_of, mark_route, read_body
from capmesh.gateway.server.http.errors import HttpError, from_rpc_error, invalid_field
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
}
FINISH_REASONS = {
    llm_service_pb2.FINISH_REASON_STOP: "stop",
    llm_service_pb2.FINISH_REASON_LENGTH: "length",
    llm_service_pb2.FINISH_REASON_CANCELLED: "stop",
}
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


def chat_request(payload: dict, message_type):
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise invalid_field("messages", "must be a list of messages")
    request = message_type(model=_typed(payload, "model", (str,), "a string") or "")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_field(f"messages[{index}]", "must be an object with role and content")
        role = ROLES.get(str(message.get("role")))
        if role is None:
            raise invalid_field(f"messages[{index}].role", f"must be one of {', '.join(sorted(ROLES))}")
        request.messages.add(role=role, content=_message_text(message.get("content"), index))
    for name in ("temperature", "top_p"):
        _copy(payload, request, name, _NUMBER)
    # max_completion_tokens is the newer name of max_tokens; it wins when both are sent.
    _copy(payload, request, "max_tokens", _INTEGER)
    _copy(payload, request, "max_completion_tokens", _INTEGER, field="max_tokens")
    _copy(payload, request, "seed", _INTEGER)
    stop = payload.get("stop")
    if isinstance(stop, str):
        request.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        request.stop.extend(stop)
    elif stop is not None:
        raise invalid_field("stop", "must be a string or a list of strings")
    n = _typed(payload, "n", (int,), "an integer")
    if n not in (None, 1):
        raise invalid_field("n", "only 1 choice per request is supported")
    _response_format(payload, request.response_format)
    return request


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


async def chat_completions(request: Request) -> Response:
    mark_route(request, "/v1/chat/completions")
    context = context_of(request)
    try:
        payload = await _json_object(request, context)
        stream = _typed(payload, "stream", (bool,), "true or false") or False
        if stream:
            return await _stream_chat(request, context, payload)
        chat = chat_request(payload, llm_service_pb2.ChatRequest)
        raw = await context.calls.unary(CHAT, chat.SerializeToString(), metadata=context.metadata(request))
    except HttpError as error:
        return openai_error(error)
    except grpc.aio.AioRpcError as exc:
        return openai_error(from_rpc_error(exc))
    reply = llm_service_pb2.ChatResponse.FromString(raw)
    return JSONResponse(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.message.content},
                    "finish_reason": FINISH_REASONS.get(reply.finish_reason, "stop"),
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply.usage),
        }
    )


async def _stream_chat(request: Request, context: BridgeContext, payload: dict) -> Response:
    chat = chat_request(payload, llm_service_pb2.StreamChatRequest)
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    role_sent = False

    def chunk(delta: dict, finish_reason: str | None, model: str, usage: dict | None = None, choices=True) -> dict:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
            if choices
            else [],
        }
        if usage is not None:
            body["usage"] = usage
        return body

    def encode(raw: bytes, index: int) -> bytes:
        nonlocal role_sent
        reply = llm_service_pb2.StreamChatResponse.FromString(raw)
        kind = reply.WhichOneof("event")
        events = []
        if not role_sent and kind in {"chunk", "result"}:
            events.append(chunk({"role": "assistant", "content": ""}, None, chat.model))
            role_sent = True
        if kind == "chunk" and reply.chunk.text:
            events.append(chunk({"content": reply.chunk.text}, None, chat.model))
        elif kind == "result":
            model = reply.result.model or chat.model
            events.append(chunk({}, FINISH_REASONS.get(reply.result.finish_reason, "stop"), model))
            if include_usage:
                events.append(chunk({}, None, model, usage=_usage(reply.result.usage), choices=False))
        return b"".join(streams.sse_event(event) for event in events)

    call = context.calls.stream(STREAM_CHAT, chat.SerializeToString(), metadata=context.metadata(request))
    body = await streams.start_stream(
        call,
        encode_message=encode,
        encode_error=lambda error: streams.sse_event(openai_error_body(error)) + b"data: [DONE]\n\n",
        keepalive=streams.SSE_KEEPALIVE,
        keepalive_s=context.settings.sse_keepalive_s,
        end=b"data: [DONE]\n\n",
    )
    return StreamingResponse(body, media_type=streams.SSE, headers=streams.SSE_HEADERS)


# -------------------------------------------------------------------------------------- speech


def speech_request(payload: dict) -> tuple[tts_service_pb2.StreamSynthesizeRequest, str]:
    text = _typed(payload, "input", (str,), "a string")
    if not text:
        raise invalid_field("input", "must be a non-empty string")
    response_format = _typed(payload, "response_format", (str,), "a string") or "mp3"
    if response_format not in SPEECH_FORMATS:
        raise invalid_field("response_format", f"must be one of {', '.join(SPEECH_FORMATS)}")
    audio_format, media_type = SPEECH_FORMATS[response_format]
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
    prompt = _typed(payload, "prompt", (str,), "a string")
    if not prompt:
        raise invalid_field("prompt", "must be a non-empty string")
    response_format = _typed(payload, "response_format", (str,), "a string") or "b64_json"
    if response_format not in {"b64_json", "url"}:
        raise invalid_field("response_format", "must be b64_json or url")
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

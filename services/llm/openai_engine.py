"""The `openai` engine: any OpenAI-compatible /chat/completions endpoint, streamed over SSE.

vLLM, Ollama, llama.cpp's server and OpenAI itself speak this API. The retry policy (timeouts and
5xx retried with backoff and jitter, 429 honouring Retry-After, 401/403 naming the key setting,
content-policy rejections as FAILED_PRECONDITION) lives in `RemoteApiClient`; retries happen only
before the first delta, so a caller never sees text twice. The API key is never logged.

`response_format` travels in OpenAI's shape (json_schema with strict enforcement, json_object); the
remote API enforces it. OpenAI's API has no regex or grammar format, so those are refused here.
So are tools, logprobs, n > 1, repetition_penalty, min_p, top_k and a raw prompt (this engine does not carry
them to the remote API yet), each with INVALID_ARGUMENT naming the field: never silently dropped.
Presence and frequency penalties and logit_bias travel as they are.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import structlog

from capmesh.services.common.remote_http import RemoteApiClient
from capmesh.services.llm.config import ENV_PREFIX, LlmSettings
from capmesh.services.llm.domain import ChatRequest, ChatResult, FinishReason, ResponseFormat, TextDelta
from capmesh.services.llm.engine import LlmEngine, Sink, Submission
from capmesh.services.llm.validation import validate
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import (
    Cancelled,
    CapmeshError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager

log = structlog.get_logger("capmesh.llm")

CHAT_PATH = "chat/completions"
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "function_call": "stop",
}


class OpenAIChatEngine(LlmEngine):
    name = "openai"

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.client = RemoteApiClient(settings, ENV_PREFIX)
        # Nothing to load: the manager still gives the status RPC and NOT_FOUND for unknown names.
        self.models = ModelManager(
            lambda name: LoadedModel(
                handle=self.client,
                device="remote",
                details={"base_url": settings.openai_base_url, "context_window": str(settings.openai_context)},
            ),
            [settings.openai_model],
        )
        self.models.ensure_loaded()
        self._in_flight = 0
        self._lock = threading.Lock()

    def submit(self, request: ChatRequest, cancel: CancelToken, sink: Sink) -> Submission:
        model = self.models.resolve(request.model)
        validate(request, self.settings, self.settings.openai_context)
        fmt = request.response_format
        if fmt is not None and fmt.kind in ("regex", "grammar"):
            raise InvalidArgument.single(
                fmt.field, "is not supported by the openai engine (OpenAI's API takes json_schema or json_object)"
            )
        unsupported = [name for name, used in _unsupported_fields(request) if used]
        if unsupported:
            raise InvalidArgument(
                [FieldViolation(name, "is not supported by the openai engine") for name in unsupported]
            )
        with self._lock:
            if self._in_flight >= self.settings.max_batch_size + self.settings.max_waiting:
                raise ResourceExhausted(f"{self._in_flight} remote chat calls are already running", retry_after_s=1.0)
            self._in_flight += 1
        submission = Submission()
        # The token belongs to this call: abandoning the call cancels its HTTP exchange.
        submission.on_abandon = lambda: cancel.cancel("abandoned by the caller")
        threading.Thread(
            target=self._run, args=(model, request, cancel, sink), name="capmesh-llm-remote", daemon=True
        ).start()
        return submission

    def close(self) -> None:
        self.client.close()  # nothing was loaded, so there is no memory to release

    def _run(self, model: str, request: ChatRequest, cancel: CancelToken, sink: Sink) -> None:
        started = time.monotonic()
        answer = _Answer(model, sink)
        try:
            for line in self.client.stream_lines(CHAT_PATH, request_body(self.settings.openai_model, request), cancel):
                if answer.take_line(line):
                    break
            result = answer.result()
        except (Cancelled, DeadlineExceeded):
            result = answer.result(cancelled=True)
        except CapmeshError as exc:
            sink.deliver(exc)
            return
        except Exception as exc:
            log.exception("llm.remote_failed")
            sink.deliver(Internal(f"the remote chat call failed: {type(exc).__name__}"))
            return
        finally:
            with self._lock:
                self._in_flight -= 1
        sink.deliver(result)
        self.log_finished(result, started)


def request_body(remote_model: str, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": remote_model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.response_format is not None:
        body["response_format"] = openai_response_format(request.response_format)
    if request.presence_penalty:
        body["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty:
        body["frequency_penalty"] = request.frequency_penalty
    if request.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in request.logit_bias.items()}
    return body


def _unsupported_fields(request: ChatRequest) -> list[tuple[str, bool]]:
    """The request's fields this engine cannot carry, and whether the request uses each."""
    return [
        ("tools", bool(request.tools)),
        ("messages", any(m.tool_calls or m.role == "tool" for m in request.messages)),
        ("logprobs", request.logprobs),
        ("n", request.n != 1),
        ("repetition_penalty", request.repetition_penalty != 1.0),
        ("min_p", request.min_p != 0.0),
        ("top_k", request.top_k != 0),
        ("prompt", bool(request.prompt)),
    ]


def openai_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    """OpenAI's `response_format` for a json_schema or json_object format (validated before)."""
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    # The proto carries no schema name; OpenAI requires one and only shows it to the model.
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": json.loads(fmt.text), "strict": True}}


class _Answer:
    """Parses the SSE stream of one answer and forwards its text as deltas."""

    def __init__(self, model: str, sink: Sink) -> None:
        self.model = model
        self.sink = sink
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def take_line(self, line: str) -> bool:
        """Handles one SSE line; True once the stream says it is done."""
        if not line.startswith("data:"):
            return False  # blank separators, comments, event names
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.done = True
            return True
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise Unavailable("the remote API sent a malformed stream event", reason="REMOTE_BAD_RESPONSE") from exc
        if not isinstance(event, dict):
            raise Unavailable("the remote API sent a malformed stream event", reason="REMOTE_BAD_RESPONSE")
        if event.get("error"):
            error = event["error"]
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            raise Unavailable(f"the remote API failed mid-stream: {message}", reason="REMOTE_STREAM_ERROR")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.parts.append(content)
                self.sink.deliver(TextDelta(content, len(self.parts)))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return False

    def result(self, *, cancelled: bool = False) -> ChatResult:
        if cancelled:
            reason: FinishReason = "cancelled"
        elif self.finish_reason == "content_filter":
            raise FailedPrecondition(
                "the remote API stopped the answer by its content policy", reason="CONTENT_POLICY_VIOLATION"
            )
        elif self.finish_reason is None and not self.done:
            raise Unavailable(
                "the remote API ended the stream before the answer was complete", reason="REMOTE_STREAM_BROKEN"
            )
        else:
            reason = FINISH_REASONS.get(self.finish_reason or "stop", "stop")
        return ChatResult(
            text="".join(self.parts),
            finish_reason=reason,
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=int(self.usage.get("completion_tokens") or len(self.parts)),
            model=self.model,
        )

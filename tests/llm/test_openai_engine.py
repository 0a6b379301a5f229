"""The openai engine against a real local HTTP server that answers like an OpenAI-compatible API."""

from __future__ import annotations

import json
import time

import pytest
import structlog

from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ChatMessage, ChatRequest, ResponseFormat
from capmesh.services.llm.openai_engine import OpenAIChatEngine
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import (
    PROMPT_TOO_LONG,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from tests.support.fake_openai import FakeOpenAI, FakeRequest, Reply

PATH = "/v1/chat/completions"
SECRET = "sk-test-secret-123"
WORDS = ["Hel", "lo", ", wör", "ld 🙂"]


def chunk(content=None, finish=None, usage=None):
    event = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "remote-model",
        "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}],
    }
    if usage:
        event["choices"], event["usage"] = [], usage
    return event


def answer(request: FakeRequest) -> Reply:
    events = [chunk(w) for w in WORDS] + [
        chunk(finish="stop"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 4}),
    ]
    return Reply.sse(events)


@pytest.fixture
def api():
    with FakeOpenAI() as server:
        server.route(PATH, answer)
        yield server


@pytest.fixture
def engine(api):
    engine = OpenAIChatEngine(
        LlmSettings(
            engine="openai",
            openai_base_url=api.base_url,
            openai_api_key=SECRET,
            openai_model="remote-model",
            openai_backoff_base_s=0.01,
            log_json=False,
        )
    )
    yield engine
    engine.close()


def ask(engine, **kwargs):
    deltas: list[str] = []
    request = ChatRequest([ChatMessage("system", "be nice"), ChatMessage("user", "hi")], **kwargs)
    result = engine.generate(request, CancelToken.never(), lambda d: deltas.append(d.text))
    return deltas, result


def test_streams_deltas_and_sends_an_openai_request(engine, api):
    deltas, result = ask(engine, temperature=0.5, max_tokens=7, stop=["x"], seed=3)
    assert deltas == WORDS
    assert (result.text, result.finish_reason) == ("".join(WORDS), "stop")
    assert (result.prompt_tokens, result.completion_tokens, result.model) == (9, 4, "remote-model")
    [sent] = api.requests(PATH)
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.body["stream"] is True and sent.body["model"] == "remote-model"
    assert sent.body["messages"][0] == {"role": "system", "content": "be nice"}
    assert (sent.body["max_tokens"], sent.body["stop"], sent.body["seed"]) == (7, ["x"], 3)


def test_429_is_retried_after_retry_after(engine, api):
    api.fail_next(PATH, Reply.json(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.2"}))
    started = time.monotonic()
    _, result = ask(engine)
    assert result.text == "".join(WORDS)
    assert time.monotonic() - started >= 0.2
    assert api.calls(PATH) == 2


def test_500_and_a_dropped_connection_are_retried(engine, api):
    api.fail_next(PATH, Reply.json(500, {"error": {"message": "boom"}}))
    api.fail_next(PATH, Reply.drop())
    _, result = ask(engine)
    assert result.finish_reason == "stop"
    assert api.calls(PATH) == 3


def test_persistent_5xx_gives_up_as_unavailable(engine, api):
    for _ in range(4):
        api.fail_next(PATH, Reply.json(503, {"error": {"message": "down"}}))
    with pytest.raises(Unavailable):
        ask(engine)
    assert api.calls(PATH) == 4  # the first try and three retries


def test_401_is_unauthenticated_names_the_key_setting_and_never_shows_the_key(engine, api):
    api.fail_next(PATH, Reply.json(401, {"error": {"message": f"bad key {SECRET[:5]}"}}))
    with structlog.testing.capture_logs() as logs, pytest.raises(Unauthenticated) as error:
        ask(engine)
    assert "CAPMESH_LLM_OPENAI_API_KEY" in error.value.message
    assert SECRET not in error.value.message and SECRET not in repr(engine.settings)
    assert all(SECRET not in str(entry) for entry in logs)
    assert api.calls(PATH) == 1


def test_403_and_content_policy_are_not_retried(engine, api):
    api.fail_next(PATH, Reply.json(403, {"error": {"message": "no access"}}))
    with pytest.raises(PermissionDenied):
        ask(engine)
    api.fail_next(PATH, Reply.json(400, {"error": {"message": "flagged", "code": "content_policy_violation"}}))
    with pytest.raises(FailedPrecondition):
        ask(engine)
    assert api.calls(PATH) == 2


def test_a_prompt_past_the_remote_models_window_is_prompt_too_long(engine, api):
    message = "This model's maximum context length is 128000 tokens."
    api.fail_next(PATH, Reply.json(400, {"error": {"message": message, "code": "context_length_exceeded"}}))
    with pytest.raises(InvalidArgument) as refused:
        ask(engine)
    assert refused.value.reason == PROMPT_TOO_LONG and message in refused.value.message
    assert api.calls(PATH) == 1


def test_a_stream_broken_after_partial_output_is_unavailable_not_retried(engine, api):
    def broken(request: FakeRequest) -> Reply:
        def chunks():
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
            raise RuntimeError("the upstream worker crashed mid-answer")  # the server drops the connection

        return Reply(200, {"Content-Type": "text/event-stream"}, chunks())

    api.route(PATH, broken)
    deltas: list[str] = []
    with pytest.raises(Unavailable):
        engine.generate(ChatRequest([ChatMessage("user", "hi")]), CancelToken.never(), lambda d: deltas.append(d.text))
    assert deltas == ["par"]
    assert api.calls(PATH) == 1


def test_validation_and_unknown_model_fail_before_any_http_call(engine, api):
    with pytest.raises(InvalidArgument) as error:
        ask(engine, temperature=3.0)
    assert [v.field for v in error.value.violations] == ["temperature"]
    with pytest.raises(NotFound):
        ask(engine, model="other")
    assert api.calls(PATH) == 0


def test_response_format_travels_in_openai_shape_and_regex_is_refused(engine, api):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    ask(engine, response_format=ResponseFormat("json_schema", json.dumps(schema)))
    ask(engine, response_format=ResponseFormat("json_object"))
    first, second = (sent.body["response_format"] for sent in api.requests(PATH))
    assert first == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": True}}
    assert second == {"type": "json_object"}
    with pytest.raises(InvalidArgument) as error:
        ask(engine, response_format=ResponseFormat("regex", "[a-z]+"))
    assert [v.field for v in error.value.violations] == ["response_format.regex"]
    assert api.calls(PATH) == 2

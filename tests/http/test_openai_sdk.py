"""The official `openai` package pointed at the gateway's OpenAI-compatible endpoints."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest


@pytest.fixture
def sdk(mesh):
    with openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture
def model(sdk) -> str:
    models = sdk.models.list()
    llm = [m for m in models.data if m.owned_by == "capmesh-llm"]
    assert llm, models
    return llm[0].id


def test_chat_completion(sdk, model):
    completion = sdk.chat.completions.create(
        model=model,
        max_tokens=5,
        seed=3,
        temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert completion.usage.completion_tokens <= 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_completion_stream(sdk, model):
    stream = sdk.chat.completions.create(
        model=model,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count"}],
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = sdk.chat.completions.create(
        model=model, max_tokens=6, temperature=0, messages=[{"role": "user", "content": "Count"}]
    )
    assert text == whole.choices[0].message.content  # greedy: the stream joins to the same answer


def test_chat_errors_in_openai_shape(sdk, mesh):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="", messages=[{"role": "robot", "content": "x"}])
    assert caught.value.body["param"] == "messages[0].role"
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as unknown:
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.status_code in (400, 404)
    raw = httpx.post(f"{mesh.http_url}/v1/chat/completions", content=b"{nope", timeout=30)
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "body"


@pytest.mark.parametrize(
    ("response_format", "magic", "content_type"),
    [
        ("wav", b"RIFF", "audio/wav"),
        ("pcm", None, "audio/pcm"),
    ],
)
def test_speech(sdk, response_format, magic, content_type):
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello from the bridge.", response_format=response_format
    ) as speech:
        assert speech.headers["content-type"] == content_type
        audio = speech.read()
    assert len(audio) > 1000
    if magic:
        assert audio.startswith(magic)


def test_speech_refuses_an_unknown_format(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="x", response_format="aiff")
    assert caught.value.body["param"] == "response_format"


def test_images_as_b64_json_and_as_url(sdk):
    generated = sdk.images.generate(
        prompt="a red square", size="16x16", n=2, response_format="b64_json", extra_body={"steps": 2, "seed": 5}
    )
    assert len(generated.data) == 2
    for image in generated.data:
        assert base64.b64decode(image.b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    linked = sdk.images.generate(
        prompt="a blue square", size="16x16", response_format="url", extra_body={"steps": 2, "seed": 5}
    )
    downloaded = httpx.get(linked.data[0].url, timeout=30)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "image/png"
    assert downloaded.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_list_names_the_llm_models(sdk):
    models = sdk.models.list()
    assert models.data and all(m.object == "model" for m in models.data)

"""The `openai` ImageGen engine against a real local HTTP server that answers like the OpenAI API."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.imagegen.openai_engine import OpenAIImageEngine
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.errors import InvalidArgument, Unauthenticated, Unavailable
from tests.support.fake_openai import FakeOpenAI, Reply

PATH = "/v1/images/generations"


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def size_of(body) -> tuple[int, int]:
    width, height = body["size"].split("x")
    return int(width), int(height)


def answer_b64(request):
    width, height = size_of(request.body)
    data = [{"b64_json": base64.b64encode(image_bytes(width, height)).decode()} for _ in range(request.body["n"])]
    return Reply.json(200, {"created": 1, "data": data})


@pytest.fixture
def api():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def make_engine(api):
    engines = []

    def build(**overrides):
        settings = ImagegenSettings(
            **{
                "engine": "openai",
                "openai_base_url": api.base_url,
                "openai_api_key": "sk-test",
                "openai_model": "gpt-image-1",
                "openai_backoff_base_s": 0.01,
                **overrides,
            }
        )
        engines.append(OpenAIImageEngine(settings))
        return engines[-1]

    yield build
    for engine in engines:
        engine.close()


def run(engine, request):
    events: list[object] = []
    result = engine.generate(request, CancelToken.never(), events.append)
    files: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, FileChunk):
            files[event.index] = files.get(event.index, b"") + event.data
    return result, files


def test_b64_answers_become_pngs_and_the_request_carries_model_prompt_n_size(api, make_engine):
    api.route(PATH, answer_b64)
    result, files = run(make_engine(), ImageRequest(prompt="a red fox", width=64, height=48, num_images=2))

    [sent] = api.requests(PATH)
    assert sent.body == {"model": "gpt-image-1", "prompt": "a red fox", "n": 2, "size": "64x48"}
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert [(i.index, i.width, i.height, i.artifact.mime_type) for i in result.images] == [
        (0, 64, 48, "image/png"),
        (1, 64, 48, "image/png"),
    ]
    assert all(files[i].startswith(b"\x89PNG") for i in (0, 1))
    assert result.model == "gpt-image-1" and not result.random_weights
    assert result.images[0].seed is None


def test_url_answers_are_fetched_and_other_formats_converted_to_png(api, make_engine):
    api.route("/files/fox.jpg", lambda _: Reply.raw(image_bytes(32, 16, "JPEG"), "image/jpeg"))
    api.route(PATH, lambda _: Reply.json(200, {"data": [{"url": api.base_url.removesuffix("/v1") + "/files/fox.jpg"}]}))
    engine = make_engine(openai_response_format="url", openai_default_size="32x16")

    result, files = run(engine, ImageRequest(prompt="a fox"))

    assert api.requests(PATH)[0].body["response_format"] == "url"
    assert api.requests(PATH)[0].body["size"] == "32x16"
    image = Image.open(io.BytesIO(files[0]))
    assert (image.format, image.size) == ("PNG", (32, 16))
    assert result.images[0].artifact.size_bytes == len(files[0])


def test_server_errors_are_retried_with_the_shared_policy(api, make_engine):
    api.route(PATH, answer_b64)
    api.fail_next(PATH, Reply.json(500, {"error": {"message": "overloaded"}}))
    api.fail_next(PATH, Reply.drop())
    result, _ = run(make_engine(), ImageRequest(prompt="a fox", width=16, height=16))
    assert len(result.images) == 1 and api.calls(PATH) == 3


def test_a_rejected_key_names_the_setting(api, make_engine):
    api.route(PATH, lambda _: Reply.json(401, {"error": {"message": "bad key"}}))
    with pytest.raises(Unauthenticated, match="CAPMESH_IMAGEGEN_OPENAI_API_KEY"):
        run(make_engine(), ImageRequest(prompt="a fox"))


def test_an_answer_without_images_is_unavailable(api, make_engine):
    api.route(PATH, lambda _: Reply.json(200, {"data": [{"revised_prompt": "nothing"}]}))
    with pytest.raises(Unavailable, match="neither b64_json nor url"):
        run(make_engine(), ImageRequest(prompt="a fox"))


def test_invalid_requests_are_refused_before_any_call(api, make_engine):
    with pytest.raises(InvalidArgument) as excinfo:
        run(make_engine(max_images=2), ImageRequest(prompt="", num_images=3, width=-1))
    assert {v.field for v in excinfo.value.violations} == {"prompt", "num_images", "width"}
    assert api.calls(PATH) == 0

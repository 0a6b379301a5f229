"""The OpenAI-compatible engine against a real local HTTP server that answers like the API."""

from __future__ import annotations

import numpy as np
import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from capmesh.services.tts.audio import float_to_int16, wav_header
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import AudioChunk, AudioFormat, SceneRequest, SceneSegment, SynthesisRequest
from capmesh.services.tts.engine import make_engine
from tests.support.fake_openai import FakeOpenAI, FakeRequest, Reply

from .conftest import Collected, decode_with_pyav, synthesize, synthesize_scene, wav_pcm

PATH = "/v1/audio/speech"
API_RATE = 24000
KEY = "sk-test-secret"


def speech_reply(request: FakeRequest) -> Reply:
    """0.1 s of tone per word, as the streaming WAV the real API sends."""
    words = len(request.body["input"].split())
    t = np.arange(round(0.1 * words * API_RATE)) / API_RATE
    samples = float_to_int16((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    return Reply.raw(wav_header(API_RATE) + samples.tobytes(), "audio/wav")


@pytest.fixture()
def api():
    with FakeOpenAI() as server:
        server.route(PATH, speech_reply)
        yield server


@pytest.fixture()
def engine(api):
    engine = make_engine(
        TtsSettings(
            engine="openai",
            openai_base_url=api.base_url,
            openai_api_key=KEY,
            openai_model="tts-test",
            openai_backoff_base_s=0.01,
            openai_timeout_s=5.0,
        )
    )
    yield engine
    engine.close()


def test_each_sentence_is_one_api_call_with_the_openai_fields(api, engine):
    run = synthesize(engine, SynthesisRequest(text="One two three. Four five.", voice="nova", speed=1.25))
    bodies = [r.body for r in api.requests(PATH)]
    assert bodies == [
        {"model": "tts-test", "input": "One two three.", "voice": "nova", "speed": 1.25, "response_format": "wav"},
        {"model": "tts-test", "input": "Four five.", "voice": "nova", "speed": 1.25, "response_format": "wav"},
    ]
    assert api.requests(PATH)[0].headers["authorization"] == f"Bearer {KEY}"
    pcm = wav_pcm(run.data)
    assert pcm.sample_rate == API_RATE and pcm.duration_s == pytest.approx(0.5, abs=0.001)
    assert [c.sentence_index for c in run.chunks] == [0, 1]


def test_remote_audio_is_re_encoded_in_any_format(engine):
    run = synthesize(engine, SynthesisRequest(text="One two three four.", format=AudioFormat.FLAC, sample_rate=16000))
    decoded = decode_with_pyav(run.data)
    assert decoded.sample_rate == 16000 and decoded.duration_s == pytest.approx(0.4, abs=0.01)


def test_rate_limit_honours_retry_after_then_succeeds(api, engine):
    api.fail_next(
        PATH, Reply.json(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0.05"})
    )
    run = synthesize(engine, SynthesisRequest(text="Hello world."))
    assert api.calls(PATH) == 2 and run.result.duration_s == pytest.approx(0.2, abs=0.001)


def test_server_errors_are_retried_three_times_then_unavailable(api, engine):
    api.fail_next(PATH, Reply.json(500, {"error": {"message": "boom"}}))
    synthesize(engine, SynthesisRequest(text="Hello world."))
    assert api.calls(PATH) == 2
    for _ in range(4):
        api.fail_next(PATH, Reply.json(503, {"error": {"message": "overloaded"}}))
    with pytest.raises(Unavailable, match="503"):
        synthesize(engine, SynthesisRequest(text="Hello world."))
    assert api.calls(PATH) == 2 + 4


def test_a_dropped_connection_is_retried(api, engine):
    api.fail_next(PATH, Reply.drop())
    synthesize(engine, SynthesisRequest(text="Hello world."))
    assert api.calls(PATH) == 2


def test_bad_key_is_unauthenticated_naming_the_setting_without_retry(api, engine):
    api.fail_next(PATH, Reply.json(401, {"error": {"message": "invalid api key"}}))
    with pytest.raises(Unauthenticated) as caught:
        synthesize(engine, SynthesisRequest(text="Hello."))
    assert "CAPMESH_TTS_OPENAI_API_KEY" in caught.value.message and KEY not in caught.value.message
    assert api.calls(PATH) == 1
    api.fail_next(PATH, Reply.json(403, {"error": {"message": "no access"}}))
    with pytest.raises(PermissionDenied):
        synthesize(engine, SynthesisRequest(text="Hello."))
    assert api.calls(PATH) == 2


def test_content_rejection_is_a_failed_precondition_without_retry(api, engine):
    api.fail_next(PATH, Reply.json(400, {"error": {"message": "flagged", "code": "content_policy_violation"}}))
    with pytest.raises(FailedPrecondition) as caught:
        synthesize(engine, SynthesisRequest(text="Something."))
    assert caught.value.reason == "CONTENT_POLICY_VIOLATION" and api.calls(PATH) == 1


def test_undecodable_audio_is_unavailable(api, engine):
    api.fail_next(PATH, Reply.raw(b"this is not audio", "audio/wav"))
    with pytest.raises(Unavailable, match="cannot be decoded"):
        synthesize(engine, SynthesisRequest(text="Hello."))


def test_invalid_requests_never_reach_the_api(api, engine):
    with pytest.raises(InvalidArgument) as caught:
        synthesize(engine, SynthesisRequest(text="Hello.", voice="darth", pitch=1.2, speed=5.0))
    fields = {v.field: v.description for v in caught.value.violations}
    assert set(fields) == {"voice", "pitch", "speed"} and "alloy" in fields["voice"]
    assert api.calls(PATH) == 0


def test_cancel_between_sentences_stops_remote_calls(api, engine):
    cancel = CancelToken()
    collected = Collected()

    def emit(item):
        collected(item)
        if isinstance(item, AudioChunk):
            cancel.cancel()

    with pytest.raises(Cancelled):
        engine.synthesize(SynthesisRequest(text="One. Two. Three."), cancel, emit)
    assert api.calls(PATH) == 1


def test_remote_scene_uses_each_segment_voice(api, engine):
    run = synthesize_scene(
        engine,
        SceneRequest(
            segments=(
                SceneSegment("A", "Hi there.", voice="alloy", pause_after_s=0.1),
                SceneSegment("B", "Hello.", voice="onyx"),
            )
        ),
    )
    assert [r.body["voice"] for r in api.requests(PATH)] == ["alloy", "onyx"]
    timings = run.result.segments
    assert (timings[0].speech_end_s, timings[0].end_s, timings[1].end_s) == pytest.approx((0.2, 0.3, 0.4))

"""The TTS engine refuses an invalid request before its first message, even when it must load its
model first: the gateway decides the HTTP status (400, not 200) on the first message."""

from __future__ import annotations

import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.tts.domain import SceneRequest, SceneSegment, SynthesisRequest
from tests.tts.conftest import Collected


@pytest.fixture(params=["espeak_engine", "vits_engine"])
def fresh_engine(request):
    engine = request.getfixturevalue(request.param)
    engine.models.unload()  # as a backend that has served nothing yet
    return engine


def test_an_invalid_request_ends_before_any_message_on_a_fresh_engine(fresh_engine):
    emitted = Collected()
    with pytest.raises(InvalidArgument) as refused:
        fresh_engine.synthesize(SynthesisRequest(text="a" * 100_000), CancelToken.never(), emitted)
    assert [v.field for v in refused.value.violations] == ["text"]
    assert emitted.items == []
    with pytest.raises(InvalidArgument):
        fresh_engine.synthesize_scene(SceneRequest(segments=()), CancelToken.never(), emitted)
    assert emitted.items == []


def test_a_valid_request_on_a_fresh_engine_reports_the_load_first(fresh_engine):
    emitted = Collected()
    fresh_engine.synthesize_scene(SceneRequest(segments=(SceneSegment("A", "Hi."),)), CancelToken.never(), emitted)
    assert emitted.progress[0].stage == "loading_model"

"""The transformers (VITS) engine on the project-built tiny random checkpoint."""

from __future__ import annotations

import pytest
from transformers import VitsModel, VitsTokenizer

from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.tts.domain import AudioFormat, SceneRequest, SceneSegment, SynthesisRequest
from capmesh.services.tts.tiny import SAMPLE_RATE

from .conftest import decode_with_pyav, synthesize, synthesize_scene, wav_pcm

TEXT = "Hello there. This is the tiny model speaking. Third sentence here."


def test_tiny_checkpoint_loads_with_from_pretrained(tiny_vits_dir):
    model = VitsModel.from_pretrained(tiny_vits_dir)
    tokenizer = VitsTokenizer.from_pretrained(tiny_vits_dir)
    assert model.config.hidden_size <= 32 and model.config.sampling_rate == SAMPLE_RATE
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert tokenizer("abc", return_tensors="pt")["input_ids"].shape[-1] == 7  # blanks around each character


def test_same_seed_same_audio_and_another_seed_differs(vits_engine):
    first = synthesize(vits_engine, SynthesisRequest(text=TEXT, seed=7))
    again = synthesize(vits_engine, SynthesisRequest(text=TEXT, seed=7))
    other = synthesize(vits_engine, SynthesisRequest(text=TEXT, seed=8))
    assert first.data == again.data
    assert first.data != other.data
    assert first.result.seed == 7 and first.result.sentences == 3


def test_vits_output_is_a_wav_at_the_model_rate_and_reports_random_weights(vits_engine):
    run = synthesize(vits_engine, SynthesisRequest(text=TEXT, seed=1))
    pcm = wav_pcm(run.data)
    assert pcm.sample_rate == run.result.sample_rate == SAMPLE_RATE
    assert pcm.duration_s == pytest.approx(run.result.duration_s) and pcm.duration_s > 0
    assert run.result.random_weights is True
    (status,) = vits_engine.models.status()
    assert status.random_weights and status.state.value == "loaded" and status.memory_bytes > 0
    assert [c.sentence_index for c in run.chunks] == [0, 1, 2]


def test_speed_and_resampling_apply_to_vits(vits_engine):
    normal = synthesize(vits_engine, SynthesisRequest(text="A fairly long sentence for timing.", seed=3)).result
    fast = synthesize(
        vits_engine, SynthesisRequest(text="A fairly long sentence for timing.", seed=3, speed=3.0)
    ).result
    assert fast.duration_s < 0.6 * normal.duration_s
    flac = synthesize(
        vits_engine, SynthesisRequest(text="Short one.", seed=3, format=AudioFormat.FLAC, sample_rate=22050)
    )
    decoded = decode_with_pyav(flac.data)
    assert decoded.sample_rate == 22050
    assert decoded.duration_s == pytest.approx(flac.result.duration_s, abs=0.01)


def test_vits_voices_and_unsupported_pitch(vits_engine):
    voices = vits_engine.list_voices()
    assert [v.id for v in voices] == ["default"] and voices[0].languages == ("en",)
    with pytest.raises(InvalidArgument) as caught:
        synthesize(vits_engine, SynthesisRequest(text="Hi.", pitch=1.5, voice="speaker-3"))
    assert {v.field for v in caught.value.violations} == {"pitch", "voice"}


def test_vits_scene(vits_engine):
    run = synthesize_scene(
        vits_engine,
        SceneRequest(
            segments=(
                SceneSegment("A", "One two.", pause_after_s=0.25),
                SceneSegment("B", "Three."),
            ),
            seed=5,
        ),
    )
    timings = run.result.segments
    assert timings[0].end_s == timings[1].start_s
    assert timings[1].end_s == pytest.approx(wav_pcm(run.data).duration_s)


def test_model_setting_tiny_serves_the_cached_checkpoint_and_unloads(vits_engine, tiny_vits_dir):
    vits_engine.models.unload()
    run = synthesize(vits_engine, SynthesisRequest(text="Hello.", seed=1))
    assert run.result.model == "tiny" and run.result.random_weights
    assert next(p.stage for p in run.progress) == "loading_model"
    (status,) = vits_engine.models.status()
    assert status.details["source"] == str(tiny_vits_dir)
    vits_engine.models.unload()
    assert vits_engine.models.loaded_models() == []

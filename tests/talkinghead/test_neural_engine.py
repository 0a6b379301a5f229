"""The neural (EchoMimic-style) engine on its tiny random-weight checkpoint, without gRPC.

Loaded through the components' own `from_pretrained`; the output is noise, so the tests check what
the engine promises: the frames and size asked for, a valid mp4 with the audio, the same bytes for
the same seed, one progress report per denoising step, guidance that changes the result, and a
cancel that stops at the next step.
"""

from __future__ import annotations

import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import Cancelled
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.domain import TalkingHeadRequest
from capmesh.services.talkinghead.engine import STAGES, make_engine
from tests.support.video import probe_mp4

SIZE = 96
FPS = 8


@pytest.fixture(scope="module")
def neural():
    engine = make_engine(TalkingheadSettings(engine="echomimic", batch_frames=4))
    yield engine
    engine.close()


def request(portrait_png: bytes, speech_wav: bytes, **fields) -> TalkingHeadRequest:
    base = dict(reference_image=portrait_png, audio=speech_wav, width=SIZE, height=SIZE, fps=FPS, seed=11, steps=3)
    base.update(fields)
    return TalkingHeadRequest(**base)


def run(engine, req, cancel: CancelToken | None = None):
    events: list[ProgressUpdate] = []
    result = engine.generate(req, cancel or CancelToken.never(), events.append)
    return result, events


def test_loads_the_tiny_checkpoint_and_reports_random_weights(neural):
    assert neural.name == "echomimic"
    assert {"steps", "guidance_scale", "seed"} <= neural.honoured_parameters
    with neural.models.use() as model:
        assert model.random_weights and model.details["kind"].startswith("echomimic")


def test_writes_the_frames_and_size_asked_for_as_a_valid_mp4(neural, portrait_png, speech_wav):
    result, events = run(neural, request(portrait_png, speech_wav, num_frames=10))
    probe, frames = probe_mp4(result.mp4)
    assert (result.frame_count, result.width, result.height) == (10, SIZE, SIZE)
    assert (probe.frame_count, probe.width, probe.height, probe.audio_codec) == (10, SIZE, SIZE, "aac")
    assert probe.fps == pytest.approx(FPS)
    assert len(frames) == 10 and frames[0].shape == (SIZE, SIZE, 3)
    assert list(dict.fromkeys(e.stage for e in events)) == list(STAGES)
    assert result.model == "tiny" and result.faces_found == 1


def test_frame_count_follows_the_audio(neural, portrait_png, speech, speech_wav):
    samples, rate = speech
    result, _ = run(neural, request(portrait_png, speech_wav, steps=1))
    assert result.frame_count == round(len(samples) / rate * FPS)


def test_the_same_seed_gives_the_same_video_and_another_seed_another(neural, portrait_png, speech_wav):
    first, _ = run(neural, request(portrait_png, speech_wav, num_frames=4))
    again, _ = run(neural, request(portrait_png, speech_wav, num_frames=4))
    other, _ = run(neural, request(portrait_png, speech_wav, num_frames=4, seed=12))
    assert first.mp4 == again.mp4 and first.seed == 11
    assert other.mp4 != first.mp4


@pytest.mark.parametrize("steps", [1, 4])
def test_one_progress_report_per_denoising_step(neural, portrait_png, speech_wav, steps):
    _, events = run(neural, request(portrait_png, speech_wav, num_frames=3, steps=steps))
    stepped = [e for e in events if e.stage == "inference" and e.step > 0]
    assert [e.step for e in stepped] == list(range(1, steps + 1))
    assert {e.total_steps for e in stepped} == {steps}


def test_guidance_scale_is_honoured(neural, portrait_png, speech_wav):
    plain, _ = run(neural, request(portrait_png, speech_wav, num_frames=3, guidance_scale=1.0))
    guided, _ = run(neural, request(portrait_png, speech_wav, num_frames=3, guidance_scale=6.0))
    assert plain.mp4 != guided.mp4


def test_cancel_stops_at_the_next_step(neural, portrait_png, speech_wav):
    cancel = CancelToken()
    events: list[ProgressUpdate] = []

    def emit(event: ProgressUpdate) -> None:
        events.append(event)
        if event.stage == "inference" and event.step == 1:
            cancel.cancel("the caller left")

    with pytest.raises(Cancelled):
        neural.generate(request(portrait_png, speech_wav, num_frames=3, steps=5), cancel, emit)
    assert max(e.step for e in events if e.stage == "inference") == 1
